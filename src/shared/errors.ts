/**
 * The error table: every error a user can see has a stable code, where it is
 * seen (an HTTP status from the webhook, an exit status from the command) and a
 * message template saying what was wrong, with what value, and what is accepted.
 */

interface ErrorSpec<P> {
  /** The HTTP status of the webhook's answer. */
  readonly status?: number;
  /** The command's exit status: 2 wrong usage, 1 a failure. */
  readonly exit?: number;
  /** What the code means, for the README's list. */
  readonly meaning: string;
  readonly message: (p: P) => string;
}

const q = (text: string): string => JSON.stringify(text);

export const ERRORS = {
  MALFORMED_REVIEW: {
    status: 400,
    meaning: 'the body is JSON but not an admission.k8s.io/v1 AdmissionReview with a request',
    message: (detail: string) => `malformed AdmissionReview: ${detail}; expected an admission.k8s.io/v1 AdmissionReview with a request`,
  },
  INVALID_JSON: { status: 400, meaning: 'the body is not JSON', message: (detail: string) => `request body is not valid JSON: ${detail}` },
  CONTENT_LENGTH_MISMATCH: {
    status: 400,
    meaning: 'the body is shorter or longer than its Content-Length',
    message: () => 'request body size did not match its Content-Length',
  },
  BAD_REQUEST: { status: 400, meaning: 'the request could not be read (cut off, or a bad URL)', message: (detail: string) => `bad request: ${detail}` },
  BODY_TOO_LARGE: { status: 413, meaning: 'the body is over 7 MiB', message: (limit: string) => `request body is larger than ${limit}` },
  UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    meaning: 'the content type is not application/json',
    message: (contentType: string) => `unsupported content type ${contentType}; expected application/json`,
  },
  NOT_FOUND: {
    status: 404,
    meaning: 'no such route',
    message: (route: string) => `no route ${route}; the webhook serves POST /mutate, GET /healthz and GET /readyz`,
  },
  HEADERS_TOO_LARGE: { status: 431, meaning: 'the request headers are too large', message: () => 'request headers are too large' },
  REQUEST_TIMEOUT: { status: 408, meaning: 'the request did not arrive in time', message: () => 'request took too long to arrive' },
  OVERLOADED: {
    status: 503,
    meaning: 'too many request bytes in flight; retried by the API server',
    message: (capacity: string) => `too many request bytes in flight (${capacity}); retry shortly`,
  },
  INTERNAL: { status: 500, meaning: 'a bug; the log says more', message: () => 'internal error; see the webhook log' },

  UNKNOWN_FLAG: {
    exit: 2,
    meaning: 'a flag the command does not have',
    message: (p: { flag: string; suggestion?: string }) => `unknown flag ${p.flag}${p.suggestion === undefined ? '' : `; did you mean ${p.suggestion}?`}`,
  },
  FLAG_NEEDS_VALUE: { exit: 2, meaning: 'a flag given last without its value', message: (p: { flag: string; accepted: string }) => `${p.flag} needs a value: ${p.accepted}` },
  INVALID_FLAG: {
    exit: 2,
    meaning: 'a flag or environment variable with a value it does not accept',
    message: (p: { origin: string; value: string; accepted: string }) => `${p.origin}: invalid value ${q(p.value)}; expected ${p.accepted}`,
  },
  MISSING_FLAG: {
    exit: 2,
    meaning: 'a flag the command needs is not given',
    /** `why`: the rest of the sentence. */
    message: (p: { flag: string; why: string }) => `${p.flag} is required${p.why}`,
  },
  CONFLICTING_FLAGS: {
    exit: 2,
    meaning: 'flags that exclude each other',
    message: (p: { flags: readonly [string, string]; why?: string }) => `${p.flags[0]} and ${p.flags[1]} exclude each other${p.why === undefined ? '' : `: ${p.why}`}`,
  },
  SAME_PORT: { exit: 2, meaning: 'the webhook and metrics ports are the same', message: (port: number) => `--port and --metrics-port are both ${port}; they must differ` },
  STDIN_TWICE: { exit: 2, meaning: '-f - given more than once', message: () => '-f - (stdin) can be given only once' },
  UNEXPECTED_ARGUMENT: {
    exit: 2,
    meaning: 'an argument that is not a flag',
    message: (p: { command: string; argument: string }) => `${p.command} takes no arguments, got ${q(p.argument)}`,
  },
  MANIFEST_ARGUMENT: {
    exit: 2,
    meaning: 'a manifest given without -f',
    message: (argument: string) => `unexpected argument ${q(argument)}; give manifests with -f FILE, -f DIR or -f -`,
  },
  NO_ENDPOINTS_SOURCE: {
    exit: 2,
    meaning: 'diagnose has neither an EndpointSlice dump nor a cluster',
    message: () => 'diagnose needs the current endpoints: --endpointslices FILE (kubectl get services,endpointslices -A -o yaml) or --kubeconfig FILE',
  },
  UNREADABLE_FILE: {
    exit: 2,
    meaning: 'a file named by a flag cannot be read',
    message: (p: { flag: string; path: string; reason: string }) => `${p.flag}: cannot read ${p.path}: ${p.reason}`,
  },
  UNPARSABLE_FILE: {
    exit: 2,
    meaning: 'a file named by a flag is not YAML or JSON',
    message: (p: { flag: string; path: string; reason: string }) => `${p.flag}: ${p.path} is not YAML or JSON: ${p.reason}`,
  },
  KUBECONFIG_UNLOADABLE: {
    exit: 2,
    meaning: 'the kubeconfig cannot be loaded',
    message: (p: { path: string; reason: string }) => `--kubeconfig: cannot load ${q(p.path)}: ${p.reason}`,
  },
  KUBECONFIG_NO_CLUSTER: {
    exit: 2,
    meaning: 'the kubeconfig names no cluster',
    message: (path: string | undefined) => `--kubeconfig: ${path === undefined ? 'no cluster' : `${q(path)} has no current context with a cluster`}`,
  },
  IN_PLACE_STDIN: { exit: 2, meaning: 'inject --in-place with stdin as an input', message: () => '--in-place cannot rewrite stdin; use --output FILE or a pipe' },

  CLUSTER_UNREADABLE: {
    exit: 1,
    meaning: 'inject or explain could not list the nodes of the cluster',
    message: (p: { server: string; seconds: number; lastError?: string }) =>
      `could not list the nodes of ${p.server} within ${p.seconds}s (--informer-sync-timeout)${p.lastError === undefined ? '' : `: ${p.lastError}`}`,
  },
  MANIFEST_NOT_EDITABLE: {
    exit: 1,
    meaning: 'the manifest\'s YAML does not allow the edit (an alias or anchor in the way)',
    message: (problem: string) => problem,
  },
  CONNTRACK_TOOL_MISSING: { exit: 1, meaning: 'no conntrack tool on this machine', message: (p: { bin: string; advice: string }) => `${p.bin} not found: ${p.advice}` },
  CONNTRACK_TOOL_UNRUNNABLE: { exit: 1, meaning: 'the conntrack tool cannot be started', message: (p: { bin: string; reason: string }) => `cannot run ${p.bin}: ${p.reason}` },
  CONNTRACK_TOOL_TIMEOUT: {
    exit: 1,
    meaning: 'the conntrack tool did not finish in time',
    message: (p: { command: string; ms: number }) => `${p.command} did not finish within ${p.ms} ms`,
  },
  CONNTRACK_TOOL_FAILED: {
    exit: 1,
    meaning: 'the conntrack tool failed',
    message: (p: { command: string; ended: string; detail: string; hint: string }) => `${p.command} failed ${p.ended}: ${p.detail}${p.hint}`,
  },
  FLOW_NOT_DELETABLE: { exit: 1, meaning: 'a conntrack flow the reaper refuses to delete', message: (problem: string) => problem },
  CONNTRACK_UNREADABLE: {
    exit: 1,
    meaning: 'neither /proc/net/nf_conntrack nor the conntrack tool can be read',
    message: (p: { proc: string; tool: string }) => `conntrack table unreadable: ${p.proc}; ${p.tool}`,
  },
  CONNTRACK_READ_STOPPED: {
    exit: 1,
    meaning: 'a read of the conntrack table broke off part-way',
    message: (p: { reading: string; ended: 'failed' | 'abandoned'; entries: number; reason: string }) => `${p.reading} ${p.ended} after ${p.entries} entries: ${p.reason}`,
  },
  CONNTRACK_READ_TIMEOUT: {
    exit: 1,
    meaning: 'a read of the conntrack table took too long',
    message: (p: { path: string; seconds: number; entries: number }) => `reading ${p.path} took over ${p.seconds}s (${p.entries} entries so far); abandoned (a larger table needs a longer --conntrack-read-timeout)`,
  },
} as const satisfies Readonly<Record<string, ErrorSpec<never>>>;

export type ErrorCode = keyof typeof ERRORS;
export type ErrorParams<C extends ErrorCode> = Parameters<(typeof ERRORS)[C]['message']>[0];
type CodesWith<K extends string> = { [C in ErrorCode]: (typeof ERRORS)[C] extends Readonly<Record<K, number>> ? C : never }[ErrorCode];
export type HttpErrorCode = CodesWith<'status'>;
export type CliErrorCode = CodesWith<'exit'>;
/** Wrong usage: the command exits 2. */
export type UsageErrorCode = { [C in CliErrorCode]: (typeof ERRORS)[C]['exit'] extends 2 ? C : never }[CliErrorCode];

export function errorMessage<C extends ErrorCode>(code: C, params: ErrorParams<C>): string {
  // Each template takes its own code's parameters.
  return (ERRORS[code].message as (p: ErrorParams<C>) => string)(params);
}

/** The JSON body of every HTTP error the webhook returns. */
export interface ErrorBody {
  readonly code: HttpErrorCode;
  readonly message: string;
}

export function errorBody<C extends HttpErrorCode>(code: C, params: ErrorParams<C>): { status: number; body: ErrorBody } {
  return { status: ERRORS[code].status, body: { code, message: errorMessage(code, params) } };
}

/** An error of the table, thrown. */
export class CodedError<C extends CliErrorCode = CliErrorCode> extends Error {
  readonly code: C;
  constructor(code: C, params: ErrorParams<C>) {
    super(errorMessage(code, params));
    this.name = 'CodedError';
    this.code = code;
  }

  /** The exit status of a command that stops on this error. */
  get exit(): number {
    return ERRORS[this.code].exit;
  }
}

/** A configuration or usage error: the command prints the message and exits 2. */
export class UsageError<C extends UsageErrorCode = UsageErrorCode> extends CodedError<C> {
  constructor(code: C, params: ErrorParams<C>) {
    super(code, params);
    this.name = 'UsageError';
  }
}
