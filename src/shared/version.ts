/** Product version; test/version.test.ts keeps it equal to package.json. */
export const VERSION = '0.1.0';
export const PRODUCT = 'safe-termination';
export const RECORD_AUTHOR = `${PRODUCT}/${VERSION}`;
