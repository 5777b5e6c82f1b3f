<?php
// The error classes: one per reason of the daemon's error table (bindingd/errors.py), the same
// names as the Python and Node clients, all extending BindingError.
declare(strict_types=1);

namespace Bindingd;

class BindingError extends \RuntimeException
{
    public const DEFAULT_REASON = 'UNKNOWN';

    public readonly string $reason;

    public function __construct(
        string $message,
        ?string $reason = null,
        public readonly ?string $binding = null,
        public readonly ?string $env = null,
        public readonly ?string $backend = null,
        public readonly ?string $requestId = null,
        /** Connect's code name (e.g. "not_found"); null for errors raised by the client. */
        public readonly ?string $connectCode = null,
        public readonly int $httpStatus = 0,
    ) {
        parent::__construct($message);
        $this->reason = $reason ?? static::DEFAULT_REASON;
    }
}

class BindingNotFound extends BindingError { public const DEFAULT_REASON = 'BINDING_NOT_FOUND'; }
class WrongBindingType extends BindingError { public const DEFAULT_REASON = 'WRONG_BINDING_TYPE'; }
class AuthenticationFailed extends BindingError { public const DEFAULT_REASON = 'AUTH_FAILED'; }
class PermissionDenied extends BindingError { public const DEFAULT_REASON = 'PERMISSION_DENIED'; }
class BackendUnavailable extends BindingError { public const DEFAULT_REASON = 'BACKEND_UNAVAILABLE'; }
class BackendTimeout extends BindingError { public const DEFAULT_REASON = 'BACKEND_TIMEOUT'; }
class PreconditionFailed extends BindingError { public const DEFAULT_REASON = 'PRECONDITION_FAILED'; }
class InvalidArgument extends BindingError { public const DEFAULT_REASON = 'INVALID_ARGUMENT'; }
class SqlError extends BindingError { public const DEFAULT_REASON = 'SQL_ERROR'; }
class NotLoggedIn extends BindingError { public const DEFAULT_REASON = 'NOT_LOGGED_IN'; }
class SessionExpired extends BindingError { public const DEFAULT_REASON = 'SESSION_EXPIRED'; }
class TokenRevoked extends BindingError { public const DEFAULT_REASON = 'TOKEN_REVOKED'; }
class PolicyDenied extends PermissionDenied { public const DEFAULT_REASON = 'POLICY_DENIED'; }
class InternalError extends BindingError { public const DEFAULT_REASON = 'INTERNAL'; }
/** No daemon was found or it cannot be reached (as opposed to a backend behind it). */
class DaemonUnavailable extends BindingError { public const DEFAULT_REASON = 'DAEMON_UNAVAILABLE'; }

final class Errors
{
    /** @var array<string, class-string<BindingError>> */
    public const BY_REASON = [
        'BINDING_NOT_FOUND' => BindingNotFound::class,
        'WRONG_BINDING_TYPE' => WrongBindingType::class,
        'AUTH_FAILED' => AuthenticationFailed::class,
        'PERMISSION_DENIED' => PermissionDenied::class,
        'BACKEND_UNAVAILABLE' => BackendUnavailable::class,
        'BACKEND_TIMEOUT' => BackendTimeout::class,
        'PRECONDITION_FAILED' => PreconditionFailed::class,
        'INVALID_ARGUMENT' => InvalidArgument::class,
        'SQL_ERROR' => SqlError::class,
        'NOT_LOGGED_IN' => NotLoggedIn::class,
        'SESSION_EXPIRED' => SessionExpired::class,
        'TOKEN_REVOKED' => TokenRevoked::class,
        'POLICY_DENIED' => PolicyDenied::class,
        'INTERNAL' => InternalError::class,
    ];

    /** The exception for a Connect error body (`{"code", "message", "details"}`). */
    public static function fromConnect(array $body, int $status): BindingError
    {
        $info = [];
        foreach ($body['details'] ?? [] as $detail) {
            if (($detail['type'] ?? '') === 'google.rpc.ErrorInfo' && isset($detail['debug'])) {
                $info = $detail['debug'];
                break;
            }
        }
        $meta = $info['metadata'] ?? [];
        $reason = $info['reason'] ?? null;
        $class = self::BY_REASON[$reason ?? ''] ?? BindingError::class;
        $code = is_string($body['code'] ?? null) ? $body['code'] : null;
        return new $class(
            (string) ($body['message'] ?? "bindingd answered HTTP $status"),
            $reason ?? ($code !== null ? strtoupper($code) : null),
            ($meta['binding'] ?? '') !== '' ? $meta['binding'] : null,
            ($meta['env'] ?? '') !== '' ? $meta['env'] : null,
            ($meta['backend'] ?? '') !== '' ? $meta['backend'] : null,
            ($meta['request_id'] ?? '') !== '' ? $meta['request_id'] : null,
            $code,
            $status,
        );
    }
}
