<?php
declare(strict_types=1);

namespace Bindingd;

/** An object's metadata, as R2's R2Object (what head(), put() and list() return). */
class R2Object
{
    public function __construct(
        public readonly string $key,
        public readonly string $version,
        public readonly int $size,
        public readonly string $etag,
        public readonly string $httpEtag,
        public readonly \DateTimeImmutable $uploaded,
        /** contentType, contentLanguage, contentDisposition, contentEncoding, cacheControl, cacheExpiry */
        public readonly array $httpMetadata = [],
        /** @var array<string, string> */
        public readonly array $customMetadata = [],
        /** ['offset' => int, 'length' => int]: what a get or head covers (the part asked for, else the whole object); null from put and list */
        public readonly ?array $range = null,
        public readonly string $storageClass = 'Standard',
    ) {
    }

    /** From the JSON of an ObjectMeta message (put's answer, list). */
    public static function fromMeta(array $m): self
    {
        $http = [];
        foreach ($m['httpMetadata'] ?? [] as $name => $value) {
            $http[$name] = $name === 'cacheExpiry' ? self::date((int) $value) : $value;
        }
        return new self(
            (string) $m['key'],
            (string) ($m['version'] ?? ''),
            (int) ($m['size'] ?? 0),
            (string) ($m['etag'] ?? ''),
            (string) ($m['httpEtag'] ?? ''),
            self::date((int) ($m['uploaded'] ?? 0)),
            $http,
            $m['customMetadata'] ?? [],
            null,
            (string) ($m['storageClass'] ?? 'Standard'),
        );
    }

    /** @param array<string, string> $h lower-cased response headers of /objects */
    public static function fromHeaders(string $key, array $h): self
    {
        $http = [];
        foreach (R2Bucket::HTTP_HEADERS as $field => $header) {
            if (isset($h[$header])) {
                $http[$field] = $h[$header];
            }
        }
        if (isset($h['x-bindingd-no-content-type'])) {
            unset($http['contentType']);  // the response's Content-Type, not the object's
        }
        if (isset($h['expires'])) {
            $http['cacheExpiry'] = new \DateTimeImmutable($h['expires']);
        }
        $custom = [];
        foreach ($h as $name => $value) {
            if (str_starts_with($name, 'x-amz-meta-')) {
                $custom[rawurldecode(substr($name, 11))] = $value;
            }
        }
        $size = (int) ($h['x-bindingd-size'] ?? $h['content-length'] ?? 0);
        // What a read covers, as R2 says it: the whole object unless a part was asked for.
        $range = ['offset' => 0, 'length' => $size];
        if (isset($h['content-range']) && preg_match('#bytes (\d+)-(\d+)/(\d+)#', $h['content-range'], $m)) {
            $range = ['offset' => (int) $m[1], 'length' => (int) $m[2] - (int) $m[1] + 1];
            $size = (int) $m[3];
        }
        $httpEtag = $h['etag'] ?? '';
        return new self(
            $key,
            $h['x-bindingd-version'] ?? '',
            $size,
            trim($httpEtag, '"'),
            $httpEtag,
            self::date((int) ($h['x-bindingd-uploaded'] ?? 0)),
            $http,
            $custom,
            $range,
        );
    }

    private static function date(int $ms): \DateTimeImmutable
    {
        return (new \DateTimeImmutable('@' . intdiv($ms, 1000)))->modify('+' . ($ms % 1000) . ' milliseconds');
    }
}
