/**
 * Typed errors. Every failure the API reports becomes a subclass of {@link RuntaError}
 * chosen by the error `code` of the envelope
 * `{"error": {"code", "message", "field"?}, "request_id"}`, falling back on the HTTP
 * status when the body carries no code.
 */

/** Machine-readable error codes of the REST API (SPEC §1). */
export type ErrorCode =
  | "already_exists"
  | "deadline_exceeded"
  | "failed_precondition"
  | "internal"
  | "invalid_argument"
  | "not_found"
  | "permission_denied"
  | "rate_limited"
  | "unauthenticated"
  | "unavailable"
  | "unimplemented"
  | "resource_exhausted";

export interface RuntaErrorInit {
  /** The API error code, or a client-side one (`connection_error`, `timeout`). */
  code: string;
  message: string;
  /** HTTP status; 0 when the request never got an answer. */
  status?: number;
  /** The daemon's request id (body `request_id` or header `X-Request-Id`). */
  requestId?: string | undefined;
  /** Dotted path of the offending request field, when one is to blame. */
  field?: string | undefined;
  cause?: unknown;
}

/** Base class of every error this SDK throws on purpose. */
export class RuntaError extends Error {
  readonly code: string;
  readonly status: number;
  readonly requestId: string | undefined;
  readonly field: string | undefined;

  constructor(init: RuntaErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status ?? 0;
    this.requestId = init.requestId;
    this.field = init.field;
  }
}

/** 400/413/422 `invalid_argument`: a bad value; `field` names it when the daemon could. */
export class InvalidArgumentError extends RuntaError {}
/** 401 `unauthenticated`: missing, malformed or unknown token. */
export class AuthenticationError extends RuntaError {}
/** 403 `permission_denied`: the token is valid but not allowed to do this. */
export class PermissionDeniedError extends RuntaError {}
/** 404 `not_found`: no such runtime (or it belongs to another tenant), file or route. */
export class NotFoundError extends RuntaError {}
/** 409: the request conflicts with the current state of the resource. */
export class ConflictError extends RuntaError {}
/** 409 `already_exists`: e.g. a runtime name that is taken. */
export class AlreadyExistsError extends ConflictError {}
/** 409 `failed_precondition`: impossible transition, exec on a paused runtime, … */
export class FailedPreconditionError extends ConflictError {}
/** 429 `rate_limited`. */
export class RateLimitError extends RuntaError {}
/** 503 `resource_exhausted`: no capacity left for the request. */
export class ResourceExhaustedError extends RuntaError {}
/** 503 `unavailable`: the daemon or the runtime's agent cannot serve right now. */
export class UnavailableError extends RuntaError {}
/** `deadline_exceeded`. */
export class DeadlineExceededError extends RuntaError {}
/** `unimplemented` (also 405 method not allowed). */
export class UnimplementedError extends RuntaError {}
/** 500 `internal`. */
export class InternalError extends RuntaError {}
/** The daemon could not be reached, or the connection broke (`code` = `connection_error`). */
export class RuntaConnectionError extends RuntaError {}
/** A client-side timeout fired before the daemon answered (`code` = `timeout`). */
export class RuntaTimeoutError extends RuntaError {}

type ErrorClass = new (init: RuntaErrorInit) => RuntaError;

const BY_CODE: Record<string, ErrorClass> = {
  already_exists: AlreadyExistsError,
  deadline_exceeded: DeadlineExceededError,
  failed_precondition: FailedPreconditionError,
  internal: InternalError,
  invalid_argument: InvalidArgumentError,
  not_found: NotFoundError,
  permission_denied: PermissionDeniedError,
  rate_limited: RateLimitError,
  unauthenticated: AuthenticationError,
  unavailable: UnavailableError,
  unimplemented: UnimplementedError,
  resource_exhausted: ResourceExhaustedError,
};

function classForStatus(status: number): ErrorClass {
  switch (status) {
    case 400:
    case 413:
    case 422:
      return InvalidArgumentError;
    case 401:
      return AuthenticationError;
    case 403:
      return PermissionDeniedError;
    case 404:
      return NotFoundError;
    case 409:
      return ConflictError;
    case 429:
      return RateLimitError;
    case 501:
    case 405:
      return UnimplementedError;
    case 503:
      return UnavailableError;
    case 504:
      return DeadlineExceededError;
    default:
      return status >= 500 ? InternalError : RuntaError;
  }
}

function codeForStatus(status: number): string {
  switch (status) {
    case 400:
    case 413:
    case 422:
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 409:
      return "failed_precondition";
    case 429:
      return "rate_limited";
    case 503:
      return "unavailable";
    case 504:
      return "deadline_exceeded";
    default:
      return status >= 500 ? "internal" : "unknown";
  }
}

/**
 * Builds the typed error for an error response. `body` is the parsed JSON body (or
 * anything else when the body was not the envelope).
 */
export function errorFromResponse(status: number, body: unknown, headerRequestId?: string | null): RuntaError {
  let code: string | undefined;
  let message: string | undefined;
  let field: string | undefined;
  let requestId: string | undefined = headerRequestId ?? undefined;
  if (body && typeof body === "object") {
    const b = body as { error?: unknown; request_id?: unknown };
    if (typeof b.request_id === "string") requestId = b.request_id;
    if (b.error && typeof b.error === "object") {
      const e = b.error as { code?: unknown; message?: unknown; field?: unknown };
      if (typeof e.code === "string") code = e.code;
      if (typeof e.message === "string") message = e.message;
      if (typeof e.field === "string") field = e.field;
    }
  } else if (typeof body === "string" && body.trim() !== "") {
    message = body.trim().slice(0, 500);
  }
  const cls = (code !== undefined ? BY_CODE[code] : undefined) ?? classForStatus(status);
  return new cls({
    code: code ?? codeForStatus(status),
    message: message ?? `HTTP ${status}`,
    status,
    requestId,
    field,
  });
}

const STATUS_BY_CODE: Record<string, number> = {
  already_exists: 409,
  deadline_exceeded: 504,
  failed_precondition: 409,
  internal: 500,
  invalid_argument: 422,
  not_found: 404,
  permission_denied: 403,
  rate_limited: 429,
  unauthenticated: 401,
  unavailable: 503,
  unimplemented: 501,
  resource_exhausted: 503,
};

/** Builds the typed error for an error that arrived without HTTP (a WebSocket `error` frame). */
export function errorFromCode(code: string, message: string): RuntaError {
  const status = STATUS_BY_CODE[code] ?? 0;
  return errorFromResponse(status, { error: { code, message } });
}
