<?php
declare(strict_types=1);

namespace Bindingd;

/** @internal How `connect()` finds the daemon (see its doc comment). */
final class Discovery
{
    public static function transport(?string $endpoint, ?string $token, ?string $cwd = null): Transport
    {
        $given = $endpoint ?? (getenv('BINDINGD_ENDPOINT') ?: null);
        $token = self::clean($token) ?? self::clean(getenv('BINDINGD_TOKEN') ?: null);
        if ($given !== null) {
            return self::fromEndpoint(trim($given), $token);
        }
        $start = $cwd ?? (getcwd() ?: '.');
        $state = self::projectState($start);
        $found = $state !== null ? self::readTrusted("$state/endpoint") : null;
        if ($found === null || $found === '') {
            $where = $state !== null ? "in $state" : "in $start or its parents (up to the project's root)";
            throw new DaemonUnavailable(
                "no bindingd daemon found: BINDINGD_ENDPOINT is not set and there is no .bindingd/endpoint $where; "
                . Transport::START_HINT
            );
        }
        $projectToken = self::clean(self::readTrusted("$state/token"));
        return self::fromEndpoint($found, $projectToken);
    }

    public static function httpSocketFor(string $grpcSocket): string
    {
        $dir = dirname($grpcSocket);
        $name = basename($grpcSocket);
        if ($name === 'bindingd.sock') {
            return "$dir/http.sock";
        }
        if (str_ends_with($name, 'http.sock')) {
            return $grpcSocket;  // already the HTTP one
        }
        return $dir . '/' . preg_replace('/\.sock$/', '', $name) . '.http.sock';
    }

    private static function fromEndpoint(string $endpoint, ?string $token): Transport
    {
        if (str_starts_with($endpoint, 'unix://')) {
            $endpoint = substr($endpoint, 7);
        } elseif (str_starts_with($endpoint, 'unix:')) {
            $endpoint = substr($endpoint, 5);
        }
        if (str_starts_with($endpoint, '/')) {
            return new Transport(self::httpSocketFor($endpoint), 'http://bindingd', null);
        }
        if (preg_match('#^https?://([^/]+)/?$#', $endpoint, $m)) {
            return new Transport(null, "http://{$m[1]}", $token);
        }
        $bare = preg_replace('#^(tcp|grpc)://#', '', $endpoint);
        if (preg_match('/^(.+):(\d+)$/', rtrim($bare, '/'), $m) && (int) $m[2] < 65535) {
            return new Transport(null, 'http://' . $m[1] . ':' . ((int) $m[2] + 1), $token);
        }
        throw new DaemonUnavailable(
            "bindingd endpoint '$endpoint' is not valid: expected unix:///abs/path, /abs/path, host:port or http://host:port"
        );
    }

    private static function clean(?string $token): ?string
    {
        return $token !== null && trim($token) !== '' ? trim($token) : null;
    }

    private static function projectState(string $start): ?string
    {
        $dir = realpath($start) ?: $start;
        while (true) {
            $state = "$dir/.bindingd";
            if (is_dir($state) && !is_link($state)) {
                self::checkTrusted($state);
                return $state;
            }
            // The project's root: bindingd.yaml, or a Workers project's wrangler file.
            foreach (['bindingd.yaml', 'wrangler.json', 'wrangler.jsonc', 'wrangler.toml'] as $marker) {
                if (is_file("$dir/$marker")) {
                    return null;
                }
            }
            $parent = dirname($dir);
            if ($parent === $dir) {
                return null;
            }
            $dir = $parent;
        }
    }

    /** A file of this user's that others cannot write: anyone else could plant an endpoint. */
    private static function checkTrusted(string $path): void
    {
        $info = lstat($path);
        if ($info === false) {
            return;
        }
        $uid = function_exists('posix_geteuid') ? posix_geteuid() : null;
        if (($uid !== null && $info['uid'] !== $uid) || ($info['mode'] & 0o022) !== 0) {
            throw new DaemonUnavailable(
                "not using $path: it is not yours alone (owner uid {$info['uid']}, mode " . decoct($info['mode'] & 0o777)
                . '), so it may not be your daemon\'s; remove it or set BINDINGD_ENDPOINT; ' . Transport::START_HINT
            );
        }
    }

    private static function readTrusted(string $path): ?string
    {
        if (!is_file($path) || is_link($path)) {
            return null;
        }
        self::checkTrusted($path);
        $text = file_get_contents($path);
        return $text === false ? null : trim($text);
    }
}
