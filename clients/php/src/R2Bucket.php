<?php
declare(strict_types=1);

namespace Bindingd;

/**
 * An R2 bucket: head / get / put / delete through the daemon's /objects/<BINDING>/<key> HTTP
 * endpoint (bodies streamed both ways), list through the Objects service.
 */
final class R2Bucket
{
    /** httpMetadata field => the (lower-case) HTTP header carrying it */
    public const HTTP_HEADERS = [
        'contentType' => 'content-type',
        'contentLanguage' => 'content-language',
        'contentDisposition' => 'content-disposition',
        'contentEncoding' => 'content-encoding',
        'cacheControl' => 'cache-control',
    ];

    public function __construct(private readonly Transport $transport, public readonly string $binding)
    {
    }

    public function head(string $key): ?R2Object
    {
        [$status, $headers, $body] = $this->transport->send('HEAD', $this->path($key), $this->conditional([]), null, null, true);
        return match (true) {
            $status === 200 => R2Object::fromHeaders($key, $headers),
            $status === 404 && !isset($headers['x-bindingd-reason']) => null,
            default => $this->headError($status, $key),
        };
    }

    /**
     * The object with its body, null when the key does not exist, or the object without a body
     * (an R2Object) when `onlyIf` was not met. Options: `range` (['offset' => , 'length' => ]
     * or ['suffix' => n]), `onlyIf` (etagMatches, etagDoesNotMatch, uploadedBefore,
     * uploadedAfter), `sink` (a writable stream to receive the body instead of php://temp).
     */
    public function get(string $key, array $options = []): R2ObjectBody|R2Object|null
    {
        $headers = $this->conditional($options['onlyIf'] ?? []);
        if (isset($options['range'])) {
            $headers[] = 'Range: ' . self::range($options['range']);
        }
        $sink = $options['sink'] ?? fopen('php://temp/maxmemory:2097152', 'w+b');
        [$status, $h, $error] = $this->transport->send('GET', $this->path($key), $headers, null, $sink);
        if ($status === 200 || $status === 206) {
            return R2ObjectBody::withBody(R2Object::fromHeaders($key, $h), $sink);
        }
        if ($status === 304 || $status === 412) {
            return R2Object::fromHeaders($key, $h);
        }
        $decoded = json_decode($error, true);
        if ($status === 404 && is_array($decoded) && !isset($decoded['details'])) {
            return null;  // no such object (a missing binding's 404 carries details)
        }
        if ($status === 416) {
            throw new InvalidArgument($decoded['message'] ?? 'the range is not satisfiable', null, $this->binding);
        }
        throw $this->transport->error($status, $decoded, $error);
    }

    /**
     * Store `$value`: a string, a readable stream (sent as it is read: a file handle is never
     * read whole) or null (an empty object). Options: httpMetadata, customMetadata, md5 (hex or
     * raw), onlyIf. Returns the stored object, or null when onlyIf was not met (as R2 does).
     *
     * @param string|resource|null $value
     */
    public function put(string $key, mixed $value, array $options = []): ?R2Object
    {
        if ($value === null) {
            $value = '';
        } elseif (!is_string($value) && !is_resource($value)) {
            throw new \TypeError('an object body must be a string, a stream or null, not ' . get_debug_type($value));
        }
        $headers = $this->conditional($options['onlyIf'] ?? []);
        $http = $options['httpMetadata'] ?? [];
        foreach (self::HTTP_HEADERS as $field => $header) {
            if (isset($http[$field])) {
                $headers[] = self::header($header, self::headerValue((string) $http[$field]));
            }
        }
        if (!isset($http['contentType'])) {
            $headers[] = 'Content-Type:';  // curl would send a form's type otherwise
        }
        if (isset($http['cacheExpiry'])) {
            $headers[] = 'Expires: ' . self::httpDate($http['cacheExpiry']);
        }
        foreach ($options['customMetadata'] ?? [] as $name => $metaValue) {
            // Any string names custom metadata in R2; a header name is a token, so the name
            // goes percent-encoded (the daemon decodes it; names are lower case over HTTP).
            $headers[] = self::header('x-amz-meta-' . rawurlencode((string) $name), self::headerValue((string) $metaValue));
        }
        if (isset($options['md5'])) {
            $md5 = (string) $options['md5'];
            $headers[] = 'Content-MD5: ' . base64_encode(strlen($md5) === 32 && ctype_xdigit($md5) ? hex2bin($md5) : $md5);
        }
        $headers[] = 'Expect:';
        [$status, , $body] = $this->transport->send('PUT', $this->path($key), $headers, $value);
        $decoded = json_decode($body, true);
        if ($status === 200) {
            return R2Object::fromMeta($decoded);
        }
        if ($status === 412 && is_array($decoded) && !isset($decoded['details'])) {
            return null;
        }
        throw $this->transport->error($status, $decoded, $body);
    }

    /** Delete one key or a list of keys (up to 1000); missing keys are not an error. */
    public function delete(string|array $keys): void
    {
        if (is_string($keys)) {
            [$status, , $body] = $this->transport->send('DELETE', $this->path($keys), []);
            if ($status !== 204) {
                throw $this->transport->error($status, json_decode($body, true), $body);
            }
            return;
        }
        $this->transport->unary('Objects/Delete', ['binding' => $this->binding, 'keys' => array_values($keys)]);
    }

    /**
     * R2's list: options prefix, delimiter, cursor, startAfter, limit, include (['httpMetadata',
     * 'customMetadata']). Returns ['objects' => R2Object[], 'truncated' => bool, 'cursor' =>
     * ?string, 'delimitedPrefixes' => string[]].
     */
    public function list(array $options = []): array
    {
        $request = ['binding' => $this->binding];
        foreach (['prefix', 'delimiter', 'cursor', 'startAfter'] as $name) {
            if (isset($options[$name])) {
                $request[$name] = (string) $options[$name];
            }
        }
        if (isset($options['limit'])) {
            $request['limit'] = (int) $options['limit'];
        }
        $include = $options['include'] ?? [];
        if (in_array('httpMetadata', $include, true)) {
            $request['includeHttpMetadata'] = true;
        }
        if (in_array('customMetadata', $include, true)) {
            $request['includeCustomMetadata'] = true;
        }
        $answer = $this->transport->unary('Objects/List', $request);
        $truncated = (bool) ($answer['truncated'] ?? false);
        return [
            'objects' => array_map([R2Object::class, 'fromMeta'], $answer['objects'] ?? []),
            'truncated' => $truncated,
            'cursor' => $truncated ? ($answer['cursor'] ?? null) : null,
            'delimitedPrefixes' => $answer['delimitedPrefixes'] ?? [],
        ];
    }

    private function path(string $key): string
    {
        // A segment that is "." or ".." goes encoded: URL rules would remove it (curl does, as
        // would a proxy), and the object would be written under another key.
        $segments = array_map(
            static fn (string $s): string => $s === '.' || $s === '..' ? str_repeat('%2E', strlen($s)) : rawurlencode($s),
            explode('/', $key),
        );
        return '/objects/' . rawurlencode($this->binding) . '/' . implode('/', $segments);
    }

    /** @return list<string> */
    private function conditional(array $onlyIf): array
    {
        $headers = [];
        if (isset($onlyIf['etagMatches'])) {
            $headers[] = 'If-Match: ' . self::etag((string) $onlyIf['etagMatches']);
        }
        if (isset($onlyIf['etagDoesNotMatch'])) {
            $headers[] = 'If-None-Match: ' . self::etag((string) $onlyIf['etagDoesNotMatch']);
        }
        if (isset($onlyIf['uploadedBefore'])) {
            $headers[] = 'If-Unmodified-Since: ' . self::httpDate($onlyIf['uploadedBefore']);
        }
        if (isset($onlyIf['uploadedAfter'])) {
            $headers[] = 'If-Modified-Since: ' . self::httpDate($onlyIf['uploadedAfter']);
        }
        return $headers;
    }

    private static function etag(string $etag): string
    {
        if (strlen($etag) >= 2 && str_starts_with($etag, '"') && str_ends_with($etag, '"')) {
            // As R2's onlyIf: the etag itself (->etag), not the quoted HTTP form (->httpEtag).
            throw new \ValueError("onlyIf: an etag must not be wrapped in quotes ($etag): pass ->etag, not ->httpEtag");
        }
        if (preg_match('/[",\s]/', $etag) === 1) {
            // R2 takes the string as one strong etag, whatever it holds: W/"..." or a list
            // equals no object's etag. The header would read it as HTTP syntax, so it says "".
            return '""';
        }
        return $etag === '*' ? $etag : "\"$etag\"";
    }

    private static function httpDate(mixed $when): string
    {
        if (!$when instanceof \DateTimeInterface) {
            throw new \TypeError('a date option must be a DateTimeInterface, not ' . get_debug_type($when));
        }
        return gmdate('D, d M Y H:i:s', $when->getTimestamp()) . ' GMT';
    }

    private static function range(array $range): string
    {
        if (isset($range['suffix'])) {
            if (isset($range['offset']) || isset($range['length'])) {
                throw new \ValueError('a range takes a suffix or an offset and length, not both (as R2 does)');
            }
            return 'bytes=-' . (int) $range['suffix'];
        }
        $offset = (int) ($range['offset'] ?? 0);
        if (!isset($range['length'])) {
            return "bytes=$offset-";
        }
        return "bytes=$offset-" . ($offset + (int) $range['length'] - 1);
    }

    /** A request header line for curl, which drops "Name:" with no value but sends "Name;" as empty. */
    private static function header(string $name, string $value): string
    {
        return $value === '' ? "$name;" : "$name: $value";
    }

    private static function headerValue(string $value): string
    {
        if (preg_match('/[\r\n]/', $value)) {
            throw new \ValueError('a metadata value cannot hold a line break');
        }
        return $value;
    }

    private function headError(int $status, string $key): never
    {
        // HEAD has no body: ask again with GET of no byte for the error's JSON.
        [$s, , $body] = $this->transport->send('GET', $this->path($key), ['Range: bytes=0-0']);
        throw $this->transport->error($status, json_decode($body, true), $body);
    }
}
