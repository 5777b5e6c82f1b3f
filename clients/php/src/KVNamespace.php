<?php
declare(strict_types=1);

namespace Bindingd;

/** A Workers KV namespace: get / getWithMetadata / put / delete / list. */
final class KVNamespace
{
    private const TYPES = ['text', 'json', 'bytes', 'arrayBuffer', 'stream'];

    public function __construct(private readonly Transport $transport, public readonly string $binding)
    {
    }

    /**
     * The value, or null when the key does not exist. `$type` is "text" (default), "json"
     * (decoded to arrays), "bytes" / "arrayBuffer" (the raw string) or "stream" (a PHP stream);
     * or an options array `['type' => ..., 'cacheTtl' => ...]`.
     */
    public function get(string $key, string|array $type = 'text'): mixed
    {
        return $this->getWithMetadata($key, $type)['value'];
    }

    /** @return array{value: mixed, metadata: mixed} */
    public function getWithMetadata(string $key, string|array $type = 'text'): array
    {
        $options = is_array($type) ? $type : ['type' => $type];
        $as = $options['type'] ?? 'text';
        if (!in_array($as, self::TYPES, true)) {
            throw new \ValueError('type must be one of ' . implode(', ', self::TYPES) . ", not \"$as\"");
        }
        $request = ['binding' => $this->binding, 'key' => $key];
        if (isset($options['cacheTtl'])) {
            $request['cacheTtl'] = (int) $options['cacheTtl'];
        }
        $entry = $this->transport->unary('KV/Get', $request)['entry'] ?? [];
        if (!($entry['found'] ?? false)) {
            return ['value' => null, 'metadata' => null];
        }
        $raw = base64_decode($entry['value'] ?? '', true);
        $value = match ($as) {
            'json' => json_decode($raw, true, 512, JSON_THROW_ON_ERROR),
            'stream' => self::stream($raw),
            default => $raw,
        };
        $metadata = isset($entry['metadataJson']) ? json_decode($entry['metadataJson'], true) : null;
        return ['value' => $value, 'metadata' => $metadata];
    }

    /**
     * Store `$value` (a string, or a readable stream read to its end). Options: `expiration`
     * (seconds since the epoch), `expirationTtl` (seconds from now), `metadata` (JSON-encodable).
     *
     * @param string|resource $value
     */
    public function put(string $key, mixed $value, array $options = []): void
    {
        if (is_resource($value)) {
            $value = (string) stream_get_contents($value);
        } elseif (!is_string($value)) {
            throw new \TypeError('a KV value must be a string or a stream, not ' . get_debug_type($value) . ' (json_encode it first)');
        }
        $request = ['binding' => $this->binding, 'key' => $key, 'value' => base64_encode($value)];
        if (isset($options['expiration'])) {
            $request['expiration'] = (int) $options['expiration'];
        }
        if (isset($options['expirationTtl'])) {
            $request['expirationTtl'] = (int) $options['expirationTtl'];
        }
        if (array_key_exists('metadata', $options) && $options['metadata'] !== null) {
            $request['metadataJson'] = json_encode($options['metadata'], JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES);
        }
        $this->transport->unary('KV/Put', $request);
    }

    public function delete(string $key): void
    {
        $this->transport->unary('KV/Delete', ['binding' => $this->binding, 'key' => $key]);
    }

    /**
     * Keys in order, Workers' shape: `['keys' => [['name', 'expiration'?, 'metadata'?], ...],
     * 'list_complete' => bool, 'cursor' => ?string]`. Options: prefix, limit, cursor.
     */
    public function list(array $options = []): array
    {
        $request = ['binding' => $this->binding];
        foreach (['prefix', 'cursor'] as $name) {
            if (isset($options[$name])) {
                $request[$name] = (string) $options[$name];
            }
        }
        // As in Workers: a limit of 0 or less means none (the store's 1000).
        if (isset($options['limit']) && (int) $options['limit'] > 0) {
            $request['limit'] = (int) $options['limit'];
        }
        $answer = $this->transport->unary('KV/List', $request);
        $keys = [];
        foreach ($answer['keys'] ?? [] as $k) {
            $key = ['name' => $k['name']];
            if (isset($k['expiration'])) {
                $key['expiration'] = (int) $k['expiration'];
            }
            if (isset($k['metadataJson'])) {
                $key['metadata'] = json_decode($k['metadataJson'], true);
            }
            $keys[] = $key;
        }
        $complete = (bool) ($answer['listComplete'] ?? false);
        return ['keys' => $keys, 'list_complete' => $complete, 'cursor' => $complete ? null : ($answer['cursor'] ?? null)];
    }

    /** @return resource */
    private static function stream(string $data): mixed
    {
        $fh = fopen('php://temp', 'w+b');
        fwrite($fh, $data);
        rewind($fh);
        return $fh;
    }
}
