/**
 * A /mutate body's text → what became of it: bad JSON, the handler's result, or
 * the handler's crash (with the review's uid, so the pod can still be allowed).
 * Never throws; the route turns each outcome into its HTTP answer.
 */
import secureJson from 'secure-json-parse';
import type { HandledReview, MalformedReview, ReviewHandler } from '../admission/handler.ts';

export interface BadJson {
  readonly kind: 'bad-json';
  readonly message: string;
}

export interface HandlerCrash {
  readonly kind: 'crashed';
  readonly error: unknown;
  /** The review's uid, if the body has one. */
  readonly uid: string | undefined;
}

export type BodyOutcome = BadJson | HandlerCrash | HandledReview | MalformedReview;

export function reviewBody(handle: ReviewHandler, text: string): BodyOutcome {
  let body: unknown;
  try {
    body = parseJsonBody(text);
  } catch (error) {
    return { kind: 'bad-json', message: (error as Error).message };
  }
  try {
    return handle(body);
  } catch (error) {
    return { kind: 'crashed', error, uid: uidOf(body) };
  }
}

/** A `"__proto__"` or `"constructor"` key, or any \u00XX escape that could spell one. */
const MAYBE_POISONED = /"(?:__proto__|constructor)"|\\u00/;

/**
 * secure-json-parse drops only `"__proto__"` keys and `"constructor"` keys holding a
 * `prototype`, written literally or with letters as \u00XX escapes; a body with neither
 * spelling (nearly every review) is parsed by JSON.parse alone, sparing its two
 * regular-expression scans of the whole body, with the same result. One pass of
 * MAYBE_POISONED costs half of three substring searches (Node 26).
 * A leading BOM also takes the careful path (which strips it).
 */
export function parseJsonBody(text: string): unknown {
  if (text.charCodeAt(0) !== 0xfeff && !MAYBE_POISONED.test(text)) return JSON.parse(text);
  // Drop the poisoning keys rather than refuse the review: a valid pod may carry one in a
  // free-form map (annotations of other objects, csi.volumeAttributes), and the patch
  // never touches those maps, so the API server keeps them as they are.
  return secureJson.parse(text, undefined, { protoAction: 'remove', constructorAction: 'remove' });
}

function uidOf(body: unknown): string | undefined {
  const request = (body as { request?: { uid?: unknown } } | null)?.request;
  return typeof request?.uid === 'string' && request.uid.length > 0 ? request.uid : undefined;
}
