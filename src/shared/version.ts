/** Product version; test/version.test.ts keeps it equal to package.json. */
export const VERSION = '0.1.0';
export const PRODUCT = 'safe-termination';
export const RECORD_AUTHOR = `${PRODUCT}/${VERSION}`;

/** The oldest Node the product runs on (the Kubernetes client's HTTP stack needs it); package.json's engines says the same. */
export const MIN_NODE_VERSION = '22.19.0';

/** Whether `version` (as process.versions.node prints it) is older than `minimum`. */
export function olderThan(version: string, minimum: string): boolean {
  const a = version.split('.').map(Number);
  const b = minimum.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) < (b[i] ?? 0);
  return false;
}
