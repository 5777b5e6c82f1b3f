<?php
// The Node client's differential scenarios (clients/node/test/differential/scenarios.mjs) in
// PHP: the same scenario names, key prefixes, calls and answer keys, so that
// tests/blackbox/test_php_differential.py can compare what the PHP client answers with what
// workerd answered to the JavaScript original.
//
// What JavaScript can pass and PHP cannot (Symbols, BigInts, NaN as a key, typed arrays,
// Headers) is left out: only keys that exist here are compared, each with workerd's answer to
// the same key. Values are normalised to the JavaScript side's JSON shapes (normalise() below,
// after scenarios.mjs). Scenarios that use an API the PHP client does not have (bulk get,
// multipart uploads, checksums, D1 sessions) are not here. Nor are, in kv/expiration and
// kv/cacheTtl, a null option (PHP's "not given", where JavaScript reads null as 0) and numbers
// beyond 32 bits (JavaScript's WebIDL conversion refuses them; PHP's ints are 64-bit and the
// daemon takes any expiration before the year 10000).
declare(strict_types=1);

namespace BindingdDifferential;

use Bindingd\Env;
use Bindingd\KVNamespace;
use Bindingd\R2Bucket;
use Bindingd\R2Object;
use Bindingd\R2ObjectBody;

/** What a call that returns nothing answers in JavaScript (undefined). */
const UNDEFINED = ['$undefined' => true];

/** 2038-01-19T03:00:00Z, as in scenarios.mjs. */
const FAR_EXPIRATION = 2147482800;

/** Error messages of the scenario running now: shown on a mismatch, never compared. */
$GLOBALS['differential_messages'] = [];

/**
 * `['ok' => normalised value]` or `['threw' => PHP class]`. Error classes are PHP's own and the
 * bindingd error table's, not JavaScript's: the comparison takes any throw for any throw, and
 * `patterns` (matched against the message, as in scenarios.mjs) for what the error said.
 */
function attempt(callable $call, array $patterns = []): array
{
    try {
        return ['ok' => normalise($call())];
    } catch (\Throwable $e) {
        $GLOBALS['differential_messages'][] = get_class($e) . ': ' . $e->getMessage();
        $outcome = ['threw' => get_class($e)];
        if ($patterns !== []) {
            $outcome['matches'] = array_map(static fn (string $p): bool => preg_match($p, $e->getMessage()) === 1, $patterns);
        }
        return $outcome;
    }
}

/** Bytes as text when they are printable UTF-8, else hex (bytesValue in scenarios.mjs). */
function bytesValue(string $bytes): array
{
    if (preg_match('//u', $bytes) === 1 && preg_match('/[\x00-\x08]|\x{FFFD}/u', $bytes) !== 1) {
        return ['text' => $bytes];
    }
    return ['hex' => bin2hex($bytes)];
}

/** A string the client answered as bytes (an "arrayBuffer" read), as JavaScript shows one. */
function arrayBuffer(?string $bytes): ?array
{
    return $bytes === null ? null : ['$arrayBuffer' => bytesValue($bytes)];
}

function normaliseR2Object(R2Object $o): array
{
    $http = [];
    foreach ($o->httpMetadata as $name => $value) {
        $http[$name] = normalise($value);
    }
    $out = [
        '$class' => $o instanceof R2ObjectBody ? 'R2ObjectBody' : 'R2Object',
        'key' => $o->key,
        'version' => $o->version !== '' ? '<version>' : $o->version,
        'size' => $o->size,
        'etag' => $o->etag,
        'httpEtag' => $o->httpEtag,
        'uploaded' => normalise($o->uploaded),
        'httpMetadata' => $http,
        'customMetadata' => $o->customMetadata,
        'range' => $o->range === null ? UNDEFINED : $o->range,
        'storageClass' => $o->storageClass,
    ];
    return $out;
}

/** Plain JSON in the shapes scenarios.mjs's normalise() gives. */
function normalise(mixed $value): mixed
{
    if ($value === null || is_bool($value) || is_string($value) || is_int($value)) {
        return $value;
    }
    if (is_float($value)) {
        return is_finite($value) ? $value : ['$number' => is_nan($value) ? 'NaN' : ($value > 0 ? 'Infinity' : '-Infinity')];
    }
    if (is_resource($value)) {
        return ['$stream' => bytesValue((string) stream_get_contents($value))];
    }
    if ($value instanceof \DateTimeInterface) {
        return ['$date' => '<date>'];
    }
    if ($value instanceof R2Object) {
        return normaliseR2Object($value);
    }
    if (is_array($value)) {
        if (array_keys($value) === ['count', 'duration']) {
            return ['count' => $value['count'], 'duration' => '<duration>'];  // exec()'s answer
        }
        if (isset($value['meta']) && is_array($value['meta']) && array_key_exists('duration', $value['meta'])) {
            $value['meta'] = d1Meta($value['meta']);
        }
        $out = [];
        foreach ($value as $k => $v) {
            $out[$k] = ($k === '$undefined' || $k === '$arrayBuffer' || $k === '$stream') ? $v : normalise($v);
        }
        return $out;
    }
    return ['$type' => get_debug_type($value)];
}

/** D1's meta with what each store measures its own way as a marker (normaliseD1Meta). */
function d1Meta(array $meta): array
{
    $out = [];
    foreach ($meta as $k => $v) {
        $out[$k] = in_array($k, ['duration', 'served_by', 'size_after', 'timings'], true) ? "<$k>" : $v;
    }
    return $out;
}

function listNames(KVNamespace $kv, array $options): array
{
    return array_map(static fn (array $k): string => $k['name'], $kv->list($options)['keys']);
}

/** A KV list page as JavaScript has it: no cursor field once the list is complete. */
function kvPage(array $page): array
{
    if ($page['cursor'] === null) {
        unset($page['cursor']);
    }
    return $page;
}

/** An R2 list answer as JavaScript has it: no cursor field unless truncated. */
function r2Page(array $page): array
{
    if ($page['cursor'] === null) {
        unset($page['cursor']);
    }
    return $page;
}

function bytesUpTo(int $n): string
{
    $out = '';
    for ($i = 0; $i < $n; $i++) {
        $out .= chr($i % 256);
    }
    return $out;
}

/** A readable stream of these bytes, as a PHP caller would pass one. */
function streamOf(string $bytes)
{
    $fh = fopen('php://temp', 'w+b');
    fwrite($fh, $bytes);
    rewind($fh);
    return $fh;
}

function nowSeconds(): int
{
    return time();
}

// --------------------------------------------------------------------------------------------
// KV
// --------------------------------------------------------------------------------------------

function kv_missingKeys(Env $env): array
{
    $kv = $env->CACHE;
    return [
        'text' => attempt(fn () => $kv->get('missing/none')),
        'json' => attempt(fn () => $kv->get('missing/none', 'json')),
        'arrayBuffer' => attempt(fn () => arrayBuffer($kv->get('missing/none', 'arrayBuffer'))),
        'stream' => attempt(fn () => $kv->get('missing/none', ['type' => 'stream'])),
        'withMetadata' => attempt(fn () => $kv->getWithMetadata('missing/none')),
        'withMetadataJson' => attempt(fn () => $kv->getWithMetadata('missing/none', 'json')),
        'deleteMissing' => attempt(function () use ($kv) { $kv->delete('missing/none'); return UNDEFINED; }),
        'list' => attempt(fn () => kvPage($kv->list(['prefix' => 'missing/']))),
    ];
}

function kv_readTypes(Env $env): array
{
    $kv = $env->CACHE;
    $kv->put('types/json', json_encode(['n' => 1, 's' => 'é☃', 'list' => [true, null]], JSON_UNESCAPED_UNICODE));
    $kv->put('types/text', 'plain text, ünïcödé ✓ 😀');
    $kv->put('types/empty', '');
    return [
        'jsonAsText' => attempt(fn () => $kv->get('types/json')),
        'jsonAsTextOption' => attempt(fn () => $kv->get('types/json', ['type' => 'text'])),
        'json' => attempt(fn () => $kv->get('types/json', 'json')),
        'jsonOption' => attempt(fn () => $kv->get('types/json', ['type' => 'json'])),
        'arrayBuffer' => attempt(fn () => arrayBuffer($kv->get('types/json', 'arrayBuffer'))),
        'stream' => attempt(fn () => $kv->get('types/json', 'stream')),
        'text' => attempt(fn () => $kv->get('types/text')),
        'textAsJson' => attempt(fn () => $kv->get('types/text', 'json')),
        'empty' => attempt(fn () => $kv->get('types/empty')),
        'emptyArrayBuffer' => attempt(fn () => arrayBuffer($kv->get('types/empty', 'arrayBuffer'))),
        'emptyStream' => attempt(fn () => $kv->get('types/empty', 'stream')),
        'emptyAsJson' => attempt(fn () => $kv->get('types/empty', 'json')),
        'unknownType' => attempt(fn () => $kv->get('types/text', 'bogus')),
        'unknownTypeWithMetadata' => attempt(fn () => $kv->getWithMetadata('types/text', 'bogus')),
        'unknownTypeOption' => attempt(fn () => $kv->get('types/text', ['type' => 'bogus'])),
        'emptyOptions' => attempt(fn () => $kv->get('types/text', [])),
        'withMetadataStream' => attempt(fn () => $kv->getWithMetadata('types/text', 'stream')),
    ];
}

function kv_writeValueKinds(Env $env): array
{
    $kv = $env->CACHE;
    $puts = [
        'string' => fn () => $kv->put('kinds/string', 'string ✓'),
        'arrayBuffer' => fn () => $kv->put('kinds/arrayBuffer', bytesUpTo(300)),
        'stream' => fn () => $kv->put('kinds/stream', streamOf("ab\x00\xffcd")),
        'emptyStream' => fn () => $kv->put('kinds/emptyStream', streamOf('')),
        'emptyArrayBuffer' => fn () => $kv->put('kinds/emptyArrayBuffer', ''),
        'number' => fn () => $kv->put('kinds/number', 42),
        'object' => fn () => $kv->put('kinds/object', ['a' => 1]),
        'nullValue' => fn () => $kv->put('kinds/nullValue', null),
        'booleanValue' => fn () => $kv->put('kinds/booleanValue', true),
    ];
    $out = [];
    foreach ($puts as $name => $put) {
        $out[$name] = [
            'put' => attempt(function () use ($put) { $put(); return UNDEFINED; }),
            'read' => attempt(fn () => arrayBuffer($kv->get("kinds/$name", 'arrayBuffer'))),
        ];
    }
    return $out;
}

function kv_metadata(Env $env): array
{
    $kv = $env->CACHE;
    $values = [
        'object' => ['owner' => 'ann', 'tags' => ['x', 'y'], 'nested' => ['n' => 1.5]],
        'string' => 'just a string',
        'number' => 12,
        'array' => [1, 'two', null],
        'booleanFalse' => false,
        'nullMetadata' => null,
        'unicode' => ['name' => 'Zoë ☃ 😀'],
    ];
    $out = [];
    foreach ($values as $name => $metadata) {
        $kv->put("meta/$name", "value of $name", ['metadata' => $metadata]);
        $out[$name] = attempt(fn () => $kv->getWithMetadata("meta/$name"));
    }
    $kv->put('meta/none', 'no metadata');
    $out['none'] = attempt(fn () => $kv->getWithMetadata('meta/none'));
    $out['overwriteDropsMetadata'] = attempt(function () use ($kv) {
        $kv->put('meta/over', 'v1', ['metadata' => ['v' => 1]]);
        $kv->put('meta/over', 'v2');
        return $kv->getWithMetadata('meta/over');
    });
    $out['list'] = attempt(fn () => kvPage($kv->list(['prefix' => 'meta/'])));
    $out['atLimit'] = attempt(function () use ($kv) { $kv->put('meta/big', 'v', ['metadata' => str_repeat('x', 1022)]); return UNDEFINED; });
    $out['overLimit'] = attempt(function () use ($kv) { $kv->put('meta/bigger', 'v', ['metadata' => str_repeat('x', 1023)]); return UNDEFINED; });
    $out['overLimitStored'] = attempt(fn () => $kv->get('meta/bigger'));
    return $out;
}

function kv_listOrder(Env $env): array
{
    $kv = $env->CACHE;
    $names = ['b', 'B', 'a', 'a/b', 'a b', 'ab', 'é', 'e', 'z', '~', "\u{1F600}", "\u{FFFD}", 'ａ', '日本', 'Ω', '0', '-', '_'];
    foreach (array_reverse($names) as $name) {
        $kv->put("order/$name", $name);
    }
    return [
        'all' => attempt(fn () => listNames($kv, ['prefix' => 'order/'])),
        'paged' => attempt(function () use ($kv) {
            $pages = [];
            $cursor = null;
            for ($i = 0; $i < 20; $i++) {
                $page = $kv->list(['prefix' => 'order/', 'limit' => 5, 'cursor' => $cursor]);
                $pages[] = [
                    'names' => array_column($page['keys'], 'name'),
                    'complete' => $page['list_complete'],
                    'hasCursor' => is_string($page['cursor']) && $page['cursor'] !== '',
                ];
                if ($page['list_complete']) {
                    break;
                }
                $cursor = $page['cursor'];
            }
            return $pages;
        }),
    ];
}

function kv_listPaging(Env $env): array
{
    $kv = $env->CACHE;
    for ($i = 0; $i < 7; $i++) {
        $kv->put("paging/$i", (string) $i, $i % 2 ? ['metadata' => ['i' => $i]] : []);
    }
    $first = $kv->list(['prefix' => 'paging/', 'limit' => 3]);
    $second = $kv->list(['prefix' => 'paging/', 'limit' => 3, 'cursor' => $first['cursor']]);
    $third = $kv->list(['prefix' => 'paging/', 'limit' => 3, 'cursor' => $second['cursor']]);
    $shape = static function (array $page): array {
        $out = ['keys' => $page['keys'], 'list_complete' => $page['list_complete']];
        if (is_string($page['cursor']) && $page['cursor'] !== '') {
            $out['cursor'] = '<cursor>';
        }
        $fields = array_keys(kvPage($page));
        sort($fields);
        $out['fields'] = $fields;
        return $out;
    };
    return [
        'first' => normalise($shape($first)),
        'second' => normalise($shape($second)),
        'third' => normalise($shape($third)),
        'exact' => attempt(fn () => $shape($kv->list(['prefix' => 'paging/', 'limit' => 7]))),
        'limitOne' => attempt(fn () => $shape($kv->list(['prefix' => 'paging/', 'limit' => 1]))),
        'limitZero' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'limit' => 0])),
        'limitNegative' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'limit' => -1])),
        'limitThousand' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'limit' => 1000])),
        'limitOverThousand' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'limit' => 1001])),
        'badCursor' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'cursor' => 'not-a-cursor'])),
        'limitNull' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'limit' => null])),
        'emptyCursor' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'cursor' => ''])),
        'nullCursor' => attempt(fn () => listNames($kv, ['prefix' => 'paging/', 'cursor' => null])),
    ];
}

function kv_listPrefix(Env $env): array
{
    $kv = $env->CACHE;
    foreach (['pfx/a%b', 'pfx/a_b', 'pfx/axb', 'pfx/A', 'pfx/a', 'pfx/ab', 'pfx/b', 'pfx0', 'pfx'] as $name) {
        $kv->put($name, 'v');
    }
    $starting = static fn (array $names): array => array_values(array_filter($names, static fn (string $n): bool => str_starts_with($n, 'pfx')));
    return [
        'slash' => attempt(fn () => listNames($kv, ['prefix' => 'pfx/'])),
        'percent' => attempt(fn () => listNames($kv, ['prefix' => 'pfx/a%'])),
        'underscore' => attempt(fn () => listNames($kv, ['prefix' => 'pfx/a_'])),
        'caseSensitive' => attempt(fn () => listNames($kv, ['prefix' => 'pfx/A'])),
        'bare' => attempt(fn () => listNames($kv, ['prefix' => 'pfx'])),
        'none' => attempt(fn () => listNames($kv, ['prefix' => 'pfx/zzz'])),
        'nullPrefix' => attempt(fn () => $starting(listNames($kv, ['prefix' => null]))),
        'emptyPrefix' => attempt(fn () => $starting(listNames($kv, ['prefix' => '']))),
        'prefixAtKeyLimit' => attempt(fn () => listNames($kv, ['prefix' => str_repeat('p', 512)])),
        'prefixOverKeyLimit' => attempt(fn () => listNames($kv, ['prefix' => str_repeat('p', 513)])),
    ];
}

function kv_expiration(Env $env): array
{
    $kv = $env->CACHE;
    $now = nowSeconds();
    $put = static fn (string $key, array $options): array => attempt(function () use ($kv, $key, $options) {
        $kv->put($key, 'v', $options);
        return UNDEFINED;
    });
    $out = [];
    $out['absolute'] = $put('exp/absolute', ['expiration' => FAR_EXPIRATION]);
    $out['ttl'] = $put('exp/ttl', ['expirationTtl' => 3600, 'metadata' => ['m' => 1]]);
    $out['ttlMinimum'] = $put('exp/ttl60', ['expirationTtl' => 60]);
    $out['both'] = $put('exp/both', ['expiration' => FAR_EXPIRATION, 'expirationTtl' => 7200]);
    $out['plain'] = $put('exp/plain', []);
    $out['ttlTooShort'] = $put('exp/short', ['expirationTtl' => 59]);
    $out['ttlZero'] = $put('exp/zero', ['expirationTtl' => 0]);
    $out['ttlNegative'] = $put('exp/negative', ['expirationTtl' => -100]);
    $out['expirationPast'] = $put('exp/past', ['expiration' => $now - 10]);
    $out['expirationSoon'] = $put('exp/soon', ['expiration' => $now + 30]);
    $out['expirationMilliseconds'] = $put('exp/s-ms', ['expiration' => (int) (microtime(true) * 1000)]);
    $out['ttlFraction'] = $put('exp/fraction', ['expirationTtl' => 90.7]);
    $out['ttlString'] = $put('exp/string', ['expirationTtl' => '120']);
    $out['expirationNumericText'] = $put('exp/textual', ['expiration' => (string) FAR_EXPIRATION]);
    // JavaScript's `undefined`; PHP's null is the same "not given" (so expirationNull and
    // ttlNull, which workerd reads as 0 and refuses, are not here).
    $out['ttlUndefined'] = $put('exp/undefined', ['expirationTtl' => null]);
    $out['ttlNegativeFraction'] = $put('exp/s-negfrac', ['expirationTtl' => -0.5]);
    $out['shortOnesStored'] = attempt(fn () => listNames($kv, ['prefix' => 'exp/s']));
    $out['list'] = array_map(static function (array $key) use ($now): array {
        $item = ['name' => $key['name'], 'hasExpiration' => isset($key['expiration'])];
        if (array_key_exists('metadata', $key)) {
            $item['metadata'] = $key['metadata'];
        }
        if (isset($key['expiration'])) {
            $item['expirationIsInteger'] = is_int($key['expiration']);
            $item['expiration'] = $key['expiration'] === FAR_EXPIRATION ? 'far' : (int) round(($key['expiration'] - $now) / 10) * 10;
        }
        return $item;
    }, $kv->list(['prefix' => 'exp/'])['keys']);
    $out['getExpiring'] = attempt(fn () => $kv->getWithMetadata('exp/ttl'));
    return $out;
}

function kv_keyLimits(Env $env): array
{
    $kv = $env->CACHE;
    $base = 'keys/';
    $at512 = $base . str_repeat('k', 512 - strlen($base));
    $over512 = $at512 . 'k';
    $twoByte512 = $base . str_repeat('é', (512 - strlen($base) - 1) / 2) . 'k';
    $twoByteOver = $base . str_repeat('é', (512 - strlen($base) + 1) / 2);
    $put = static fn (string $key): array => attempt(function () use ($kv, $key) {
        $kv->put($key, 'v');
        return UNDEFINED;
    });
    $delete = static fn (string $key): array => attempt(function () use ($kv, $key) {
        $kv->delete($key);
        return UNDEFINED;
    });
    return [
        'put512' => $put($at512),
        'get512' => attempt(fn () => $kv->get($at512)),
        'put513' => $put($over512),
        'get513' => attempt(fn () => $kv->get($over512)),
        'delete513' => $delete($over512),
        'putTwoByte512' => $put($twoByte512),
        'getTwoByte512' => attempt(fn () => $kv->get($twoByte512)),
        'putTwoByte513' => $put($twoByteOver),
        'putEmpty' => $put(''),
        'getEmpty' => attempt(fn () => $kv->get('')),
        'deleteEmpty' => $delete(''),
        'putDot' => $put('.'),
        'getDot' => attempt(fn () => $kv->get('.')),
        'putDotDot' => $put('..'),
        'getDotDot' => attempt(fn () => $kv->get('..')),
        'putDotSlash' => $put('./x'),
        'deleteDotDot' => $delete('..'),
        'nulCharacter' => attempt(function () use ($kv) {
            $kv->put("keys/nul\x00x", 'v');
            return $kv->get("keys/nul\x00x");
        }),
        'listedTwoByte' => attempt(fn () => count(listNames($kv, ['prefix' => 'keys/é']))),
    ];
}

function kv_unusualText(Env $env): array
{
    $kv = $env->CACHE;
    $big = bytesUpTo(1024 * 1024);
    return [
        'invalidUtf8AsText' => attempt(function () use ($kv) {
            $kv->put('odd-value/bytes', "a\xff\xfeb");
            return $kv->get('odd-value/bytes');
        }),
        'bomText' => attempt(function () use ($kv) {
            $kv->put('odd-value/bom', "\xef\xbb\xbf{}");
            return [$kv->get('odd-value/bom'), attempt(fn () => $kv->get('odd-value/bom', 'json'))];
        }),
        'oneMebibyteStream' => attempt(function () use ($kv, $big) {
            $kv->put('odd-value/big', streamOf($big));
            $back = $kv->get('odd-value/big', 'arrayBuffer');
            return ['size' => strlen($back), 'same' => $back === $big];
        }),
    ];
}

function kv_cacheTtl(Env $env): array
{
    $kv = $env->CACHE;
    $kv->put('cachettl/k', 'v');
    return [
        'sixty' => attempt(fn () => $kv->get('cachettl/k', ['cacheTtl' => 60])),
        'thirty' => attempt(fn () => $kv->get('cachettl/k', ['cacheTtl' => 30])),
        'ten' => attempt(fn () => $kv->get('cachettl/k', ['cacheTtl' => 10])),
        'missingKeyTen' => attempt(fn () => $kv->get('cachettl/missing', ['cacheTtl' => 10])),
        'withMetadata' => attempt(fn () => $kv->getWithMetadata('cachettl/k', ['type' => 'text', 'cacheTtl' => 300])),
    ];
}

function kv_overwriteAndDelete(Env $env): array
{
    $kv = $env->CACHE;
    $kv->put('life/k', 'one', ['metadata' => ['v' => 1], 'expiration' => FAR_EXPIRATION]);
    $first = $kv->getWithMetadata('life/k');
    $kv->put('life/k', 'two');
    $second = $kv->getWithMetadata('life/k');
    $listed = $kv->list(['prefix' => 'life/']);
    $delete = static fn (): array => attempt(function () use ($kv) {
        $kv->delete('life/k');
        return UNDEFINED;
    });
    $deleted = $delete();
    $deletedTwice = $delete();
    return [
        'first' => $first,
        'second' => $second,
        'listed' => $listed['keys'],
        'deleted' => $deleted,
        'deletedTwice' => $deletedTwice,
        'afterDelete' => $kv->get('life/k'),
        'listAfterDelete' => listNames($kv, ['prefix' => 'life/']),
    ];
}

// --------------------------------------------------------------------------------------------
// R2
// --------------------------------------------------------------------------------------------

/** The body of an R2 get as text, with what the object said about itself (readBody). */
function readBody(?R2Object $object): ?array
{
    if ($object === null) {
        return null;
    }
    if (!$object instanceof R2ObjectBody) {
        return ['noBody' => normalise($object)];
    }
    return ['object' => normalise($object), 'text' => $object->text()];
}

function hourAround(R2Object $object, int $sign): \DateTimeImmutable
{
    return $object->uploaded->modify(($sign > 0 ? '+' : '-') . '1 hour');
}

function r2_missing(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    return [
        'head' => attempt(fn () => $bucket->head('r2-missing/none')),
        'get' => attempt(fn () => $bucket->get('r2-missing/none')),
        'getRange' => attempt(fn () => $bucket->get('r2-missing/none', ['range' => ['offset' => 0, 'length' => 1]])),
        'getOnlyIf' => attempt(fn () => $bucket->get('r2-missing/none', ['onlyIf' => ['etagMatches' => 'abc']])),
        'deleteOne' => attempt(function () use ($bucket) { $bucket->delete('r2-missing/none'); return UNDEFINED; }),
        'deleteMany' => attempt(function () use ($bucket) { $bucket->delete(['r2-missing/a', 'r2-missing/b']); return UNDEFINED; }),
        'list' => attempt(fn () => r2Page($bucket->list(['prefix' => 'r2-missing/']))),
    ];
}

function r2_putAndRead(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $out = [];
    $out['putString'] = attempt(fn () => $bucket->put('r2-rw/string', 'hello, wörld ✓'));
    $out['head'] = attempt(fn () => $bucket->head('r2-rw/string'));
    $body = $bucket->get('r2-rw/string');
    $out['getObject'] = normalise($body);
    $out['text'] = $body->text();
    $out['arrayBuffer'] = attempt(fn () => arrayBuffer($bucket->get('r2-rw/string')->arrayBuffer()));
    $out['stream'] = attempt(fn () => $bucket->get('r2-rw/string')->body());
    $bucket->put('r2-rw/json', json_encode(['a' => [1, 'b']]));
    $out['json'] = attempt(fn () => $bucket->get('r2-rw/json')->json());
    $out['jsonOfText'] = attempt(fn () => $bucket->get('r2-rw/string')->json());
    $binary = bytesUpTo(1000);
    $values = [
        'arrayBuffer' => $binary,
        'view' => substr($binary, 100, 64),
        'responseBody' => streamOf('from a response body'),
        'empty' => '',
        'nullValue' => null,
        'number' => 42,
        'object' => ['a' => 1],
    ];
    foreach ($values as $name => $value) {
        $out["put_$name"] = attempt(fn () => $bucket->put("r2-rw/$name", $value));
        $out["read_$name"] = attempt(function () use ($bucket, $name) {
            $object = $bucket->get("r2-rw/$name");
            return $object === null ? null : ['size' => $object->size, 'bytes' => arrayBuffer($object->arrayBuffer())];
        });
    }
    $out['overwrite'] = attempt(function () use ($bucket) {
        $first = $bucket->put('r2-rw/over', 'one');
        $second = $bucket->put('r2-rw/over', 'two!');
        $now = $bucket->get('r2-rw/over');
        return [
            'newVersion' => $first->version !== $second->version,
            'sameAsHead' => $second->version === $now->version,
            'text' => $now->text(),
            'size' => $now->size,
        ];
    });
    return $out;
}

function r2_keys(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $out = [];
    $names = [
        'unicode' => 'r2-keys/ünï cödé ☃ 😀',
        'slashes' => 'r2-keys/a//b/../c/./d',
        'dotdot' => '..',
        'dot' => '.',
        'spaces' => ' r2-keys leading and trailing ',
        'percent' => 'r2-keys/100% %2F',
        'at1024' => 'r2-keys/' . str_repeat('k', 1024 - 8),
    ];
    foreach ($names as $name => $key) {
        $out[$name] = attempt(function () use ($bucket, $name, $key) {
            $put = $bucket->put($key, $name);
            $got = $bucket->get($key);
            return ['put' => $put->key === $key, 'got' => $got->key === $key, 'text' => $got->text()];
        });
    }
    $out['over1024'] = attempt(fn () => $bucket->put('r2-keys/' . str_repeat('k', 1024 - 7), 'v'));
    $out['emptyPut'] = attempt(fn () => $bucket->put('', 'v'));
    $out['emptyGet'] = attempt(fn () => $bucket->get(''));
    $out['emptyHead'] = attempt(fn () => $bucket->head(''));
    $out['listed'] = attempt(fn () => array_map(static fn (R2Object $o): string => $o->key, $bucket->list(['prefix' => 'r2-keys/'])['objects']));
    return $out;
}

function r2_unusualText(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $bucket->put('r2-text/bom', "\xef\xbb\xbf{}");
    $bucket->put('r2-text/invalid', "a\xffb");
    return [
        'bomText' => attempt(fn () => $bucket->get('r2-text/bom')->text()),
        'bomJson' => attempt(fn () => $bucket->get('r2-text/bom')->json()),
        'invalidUtf8' => attempt(fn () => $bucket->get('r2-text/invalid')->text()),
    ];
}

function r2_ranges(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $bucket->put('r2-range/abc', 'abcdefghijklmnopqrstuvwxyz');
    $ranges = [
        'offsetLength' => ['offset' => 2, 'length' => 5],
        'offsetOnly' => ['offset' => 20],
        'lengthOnly' => ['length' => 3],
        'suffix' => ['suffix' => 4],
        'suffixWhole' => ['suffix' => 26],
        'suffixBeyond' => ['suffix' => 100],
        'lengthBeyond' => ['offset' => 24, 'length' => 10],
        'offsetAtSize' => ['offset' => 26],
        'offsetBeyond' => ['offset' => 27],
        'offsetBeyondWithLength' => ['offset' => 30, 'length' => 2],
        'zeroLength' => ['offset' => 3, 'length' => 0],
        'empty' => [],
        'negativeOffset' => ['offset' => -1],
        'negativeLength' => ['offset' => 0, 'length' => -1],
        'zeroSuffix' => ['suffix' => 0],
        'offsetAndSuffix' => ['offset' => 1, 'suffix' => 2],
    ];
    $out = [];
    foreach ($ranges as $name => $range) {
        $out[$name] = attempt(fn () => readBody($bucket->get('r2-range/abc', ['range' => $range])));
    }
    $bucket->put('r2-range/empty', '');
    $out['emptyObjectSuffix'] = attempt(fn () => readBody($bucket->get('r2-range/empty', ['range' => ['suffix' => 5]])));
    $out['emptyObjectOffset'] = attempt(fn () => readBody($bucket->get('r2-range/empty', ['range' => ['offset' => 0]])));
    return $out;
}

function r2_conditionalGet(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $put = $bucket->put('r2-cond/k', 'conditional body');
    $etag = $put->etag;
    $wrong = '0123456789abcdef0123456789abcdef';
    $cases = [
        'etagMatches' => ['etagMatches' => $etag],
        'etagMatchesQuoted' => ['etagMatches' => "\"$etag\""],
        'etagMatchesWrong' => ['etagMatches' => $wrong],
        'etagMatchesStar' => ['etagMatches' => '*'],
        'etagDoesNotMatch' => ['etagDoesNotMatch' => $etag],
        'etagDoesNotMatchWrong' => ['etagDoesNotMatch' => $wrong],
        'etagDoesNotMatchStar' => ['etagDoesNotMatch' => '*'],
        'uploadedBeforeLater' => ['uploadedBefore' => hourAround($put, 1)],
        'uploadedBeforeEarlier' => ['uploadedBefore' => hourAround($put, -1)],
        'uploadedAfterEarlier' => ['uploadedAfter' => hourAround($put, -1)],
        'uploadedAfterLater' => ['uploadedAfter' => hourAround($put, 1)],
        'matchesButUploadedAfterLater' => ['etagMatches' => $etag, 'uploadedAfter' => hourAround($put, 1)],
        'wrongButUploadedBeforeLater' => ['etagMatches' => $wrong, 'uploadedBefore' => hourAround($put, 1)],
    ];
    $out = [];
    foreach ($cases as $name => $onlyIf) {
        $out[$name] = attempt(fn () => readBody($bucket->get('r2-cond/k', ['onlyIf' => $onlyIf])));
    }
    $out['withRange'] = attempt(fn () => readBody($bucket->get('r2-cond/k', ['onlyIf' => ['etagMatches' => $etag], 'range' => ['offset' => 0, 'length' => 4]])));
    $out['failedWithRange'] = attempt(fn () => readBody($bucket->get('r2-cond/k', ['onlyIf' => ['etagDoesNotMatch' => $etag], 'range' => ['offset' => 0, 'length' => 4]])));
    return $out;
}

function r2_conditionalPut(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $first = $bucket->put('r2-cput/k', 'first');
    $etag = $first->etag;
    $out = [];
    $cases = [
        'etagMatchesWrong' => ['etagMatches' => '0123456789abcdef0123456789abcdef'],
        'etagDoesNotMatchSame' => ['etagDoesNotMatch' => $etag],
        'uploadedAfterLater' => ['uploadedAfter' => hourAround($first, 1)],
        'uploadedBeforeEarlier' => ['uploadedBefore' => hourAround($first, -1)],
        'etagMatches' => ['etagMatches' => $etag],
    ];
    foreach ($cases as $name => $onlyIf) {
        $out[$name] = attempt(function () use ($bucket, $name, $onlyIf) {
            $result = $bucket->put('r2-cput/k', "after $name", ['onlyIf' => $onlyIf]);
            return ['result' => $result === null ? null : ['etag' => $result->etag, 'size' => $result->size], 'now' => $bucket->get('r2-cput/k')->text()];
        });
    }
    $out['createOnlyIfAbsent'] = attempt(function () use ($bucket) {
        $created = $bucket->put('r2-cput/new', 'created', ['onlyIf' => ['etagDoesNotMatch' => '*']]);
        $again = $bucket->put('r2-cput/new', 'again', ['onlyIf' => ['etagDoesNotMatch' => '*']]);
        return ['created' => $created?->size, 'again' => $again, 'now' => $bucket->get('r2-cput/new')->text()];
    });
    $out['missingWithEtagMatches'] = attempt(function () use ($bucket, $etag) {
        $result = $bucket->put('r2-cput/absent', 'v', ['onlyIf' => ['etagMatches' => $etag]]);
        return ['result' => $result?->key, 'stored' => $bucket->head('r2-cput/absent') !== null];
    });
    return $out;
}

function r2_metadata(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $httpMetadata = [
        'contentType' => 'text/html; charset=utf-8',
        'contentLanguage' => 'de-CH',
        'contentDisposition' => 'attachment; filename="a b.html"',
        'contentEncoding' => 'identity',
        'cacheControl' => 'public, max-age=60',
        'cacheExpiry' => new \DateTimeImmutable('2030-01-02T03:04:05Z'),
    ];
    $customMetadata = ['owner' => 'ann', 'with space' => 'yes', 'empty' => '', 'unicode' => 'Zoë ☃'];
    $out = [];
    $out['put'] = attempt(fn () => $bucket->put('r2-meta/full', '<p>hi</p>', ['httpMetadata' => $httpMetadata, 'customMetadata' => $customMetadata]));
    $out['head'] = attempt(fn () => $bucket->head('r2-meta/full'));
    $out['cacheExpiry'] = attempt(fn () => $bucket->head('r2-meta/full')->httpMetadata['cacheExpiry']->format('Y-m-d\TH:i:s.v\Z'));
    $out['none'] = attempt(function () use ($bucket) {
        $bucket->head('r2-meta/full');
        return $bucket->put('r2-meta/none', 'x');
    });
    $out['overwriteClears'] = attempt(function () use ($bucket) {
        $bucket->put('r2-meta/over', '1', ['httpMetadata' => ['contentType' => 'a/b'], 'customMetadata' => ['k' => 'v']]);
        $bucket->put('r2-meta/over', '2');
        $object = $bucket->head('r2-meta/over');
        return ['httpMetadata' => $object->httpMetadata, 'customMetadata' => $object->customMetadata];
    });
    $out['unknownHttpField'] = attempt(function () use ($bucket) {
        $bucket->put('r2-meta/unknown', 'x', ['httpMetadata' => ['contentType' => 'a/b', 'bogus' => 'x']]);
        return $bucket->head('r2-meta/unknown')->httpMetadata;
    });
    return $out;
}

function r2_list(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $names = ['a.txt', 'b/1.txt', 'b/2.txt', 'b/c/3.txt', 'c.txt', 'd/4.txt', 'é.txt', 'B.txt', 'b0.txt'];
    foreach ($names as $name) {
        $bucket->put("r2-list/$name", $name, ['httpMetadata' => ['contentType' => 'text/plain'], 'customMetadata' => ['name' => $name]]);
    }
    $keys = static fn (array $result): array => [
        'keys' => array_map(static fn (R2Object $o): string => $o->key, $result['objects']),
        'truncated' => $result['truncated'],
        'hasCursor' => is_string($result['cursor']) && $result['cursor'] !== '',
        'delimitedPrefixes' => $result['delimitedPrefixes'],
    ];
    $paged = static function (array $options) use ($bucket, $keys): array {
        $pages = [];
        $cursor = null;
        for ($i = 0; $i < 10; $i++) {
            $page = $bucket->list($options + ['cursor' => $cursor]);
            $pages[] = $keys($page);
            if (!$page['truncated']) {
                break;
            }
            $cursor = $page['cursor'];
        }
        return $pages;
    };
    $out = [];
    $out['all'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/'])));
    $out['delimiter'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/', 'delimiter' => '/'])));
    $out['delimiterNested'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/b/', 'delimiter' => '/'])));
    $out['startAfter'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/', 'startAfter' => 'r2-list/b/2.txt'])));
    $out['paged'] = attempt(fn () => $paged(['prefix' => 'r2-list/', 'limit' => 4]));
    $out['pagedDelimiter'] = attempt(fn () => $paged(['prefix' => 'r2-list/', 'delimiter' => '/', 'limit' => 2]));
    $out['objectsWithoutInclude'] = attempt(fn () => $bucket->list(['prefix' => 'r2-list/a'])['objects']);
    $out['includeBoth'] = attempt(fn () => $bucket->list(['prefix' => 'r2-list/a', 'include' => ['httpMetadata', 'customMetadata']])['objects']);
    $out['includeCustom'] = attempt(fn () => array_map(
        static fn (R2Object $o): array => [$o->httpMetadata, $o->customMetadata],
        $bucket->list(['prefix' => 'r2-list/a', 'include' => ['customMetadata']])['objects'],
    ));
    $out['limitZero'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/', 'limit' => 0])));
    $out['limitOverThousand'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/', 'limit' => 1001])));
    $out['badCursor'] = attempt(fn () => $keys($bucket->list(['prefix' => 'r2-list/', 'cursor' => 'garbage'])));
    $out['none'] = attempt(fn () => r2Page($bucket->list(['prefix' => 'r2-list/zzz'])));
    return $out;
}

function r2_deleteMany(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    foreach (['a', 'b', 'c', 'd'] as $name) {
        $bucket->put("r2-del/$name", $name);
    }
    $delete = static fn ($keys): array => attempt(function () use ($bucket, $keys) {
        $bucket->delete($keys);
        return UNDEFINED;
    });
    $out = [];
    $out['deleteOne'] = $delete('r2-del/a');
    $out['deleteMany'] = $delete(['r2-del/b', 'r2-del/missing', 'r2-del/c']);
    $out['deleteEmptyList'] = $delete([]);
    $out['left'] = attempt(fn () => array_map(static fn (R2Object $o): string => $o->key, $bucket->list(['prefix' => 'r2-del/'])['objects']));
    $out['deleteThousand'] = $delete(array_map(static fn (int $i): string => "r2-del/x$i", range(0, 999)));
    $out['deleteOverThousand'] = $delete(array_map(static fn (int $i): string => "r2-del/x$i", range(0, 1000)));
    $out['stillThere'] = attempt(fn () => $bucket->get('r2-del/d')->text());
    return $out;
}

function r2_weakEtags(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $put = $bucket->put('r2-weak/k', 'weak etag body');
    $weak = "W/\"{$put->etag}\"";
    $cases = [
        'etagMatchesWeak' => ['etagMatches' => $weak],
        'etagMatchesWeakInList' => ['etagMatches' => "\"0123456789abcdef0123456789abcdef\", $weak"],
        'etagMatchesStrongInList' => ['etagMatches' => "\"0123456789abcdef0123456789abcdef\", \"{$put->etag}\""],
        'etagDoesNotMatchWeak' => ['etagDoesNotMatch' => $weak],
        'etagDoesNotMatchWeakOther' => ['etagDoesNotMatch' => 'W/"0123456789abcdef0123456789abcdef"'],
    ];
    $out = [];
    foreach ($cases as $name => $onlyIf) {
        $out[$name] = attempt(fn () => readBody($bucket->get('r2-weak/k', ['onlyIf' => $onlyIf])));
    }
    $out['putIfMatchWeak'] = attempt(function () use ($bucket, $weak) {
        $result = $bucket->put('r2-weak/k', 'replaced', ['onlyIf' => ['etagMatches' => $weak]]);
        return ['stored' => $result !== null, 'now' => $bucket->get('r2-weak/k')->text()];
    });
    $out['putIfNoneMatchWeak'] = attempt(function () use ($bucket, $weak) {
        $result = $bucket->put('r2-weak/k', 'replaced', ['onlyIf' => ['etagDoesNotMatch' => $weak]]);
        return ['stored' => $result !== null, 'now' => $bucket->get('r2-weak/k')->text()];
    });
    return $out;
}

function r2_conditionalPutMissing(Env $env): array
{
    $bucket = $env->ASSETS_BUCKET;
    $past = new \DateTimeImmutable('-1 day');
    $future = new \DateTimeImmutable('+1 day');
    $cases = [
        'etagMatches' => ['etagMatches' => '0123456789abcdef0123456789abcdef'],
        'etagMatchesStar' => ['etagMatches' => '*'],
        'etagDoesNotMatch' => ['etagDoesNotMatch' => '0123456789abcdef0123456789abcdef'],
        'etagDoesNotMatchStar' => ['etagDoesNotMatch' => '*'],
        'uploadedAfterPast' => ['uploadedAfter' => $past],
        'uploadedAfterFuture' => ['uploadedAfter' => $future],
        'uploadedBeforePast' => ['uploadedBefore' => $past],
        'uploadedBeforeFuture' => ['uploadedBefore' => $future],
    ];
    $out = [];
    foreach ($cases as $name => $onlyIf) {
        $key = "r2-cput-missing/$name";
        $out[$name] = attempt(function () use ($bucket, $key, $onlyIf) {
            $result = $bucket->put($key, 'v', ['onlyIf' => $onlyIf]);
            return ['result' => $result?->key, 'stored' => $bucket->head($key) !== null];
        });
        $out["get_$name"] = attempt(fn () => readBody($bucket->get($key, ['onlyIf' => $onlyIf])));
    }
    return $out;
}

// --------------------------------------------------------------------------------------------
// D1
// --------------------------------------------------------------------------------------------

function freshTables($db, string ...$ddl): void
{
    foreach ($ddl as $statement) {
        preg_match('/CREATE TABLE (\w+)/', $statement, $m);
        $db->prepare("DROP TABLE IF EXISTS {$m[1]}")->run();
        $db->prepare($statement)->run();
    }
}

/** A value and its JavaScript type (typed() in scenarios.mjs); PHP's int and float are "number". */
function typed(?array $row): ?array
{
    if ($row === null) {
        return null;
    }
    $out = [];
    foreach ($row as $k => $v) {
        $type = match (true) {
            is_array($v) => 'array',
            $v === null => 'null',
            is_int($v), is_float($v) => 'number',
            is_bool($v) => 'boolean',
            default => 'string',
        };
        $out[$k] = ['type' => $type, 'value' => $v];
    }
    return $out;
}

function d1_valueTypes(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_types (id INTEGER PRIMARY KEY, v)');
    $values = [
        'integer' => 42,
        'negative' => -7,
        'float' => 3.25,
        'bigSafe' => 2 ** 53 - 1,
        'text' => 'héllo ☃ 😀',
        'emptyText' => '',
        'nul' => "a\x00b",
        'nullValue' => null,
        'booleanTrue' => true,
        'booleanFalse' => false,
    ];
    $out = [];
    $id = 0;
    foreach ($values as $name => $value) {
        $id += 1;
        $bound = $id;
        $out[$name] = attempt(function () use ($db, $bound, $value) {
            $db->prepare('INSERT INTO d1_types (id, v) VALUES (?, ?)')->bind($bound, $value)->run();
            return typed($db->prepare('SELECT v, typeof(v) AS storage FROM d1_types WHERE id = ?')->bind($bound)->first());
        });
    }
    $out['boundDivision'] = attempt(fn () => $db->prepare('SELECT ? / 2 AS half, typeof(?) AS storage')->bind(5, 5)->first());
    $out['literals'] = attempt(fn () => typed($db->prepare(
        "SELECT 1 AS one, 1.5 AS half, 'x' AS text, NULL AS nil, x'00ff' AS blob, 9007199254740993 AS big,"
        . ' -9223372036854775808 AS min64, 1e308 * 10 AS inf, 0.1 + 0.2 AS sum, TRUE AS t, 10 / 4 AS intdiv',
    )->first()));
    return $out;
}

function d1_firstAllRunRaw(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER)');
    $db->prepare("INSERT INTO d1_people (name, age) VALUES ('ann', 31), ('bob', NULL), ('cy', 7)")->run();
    $select = $db->prepare('SELECT id, name, age FROM d1_people ORDER BY id');
    $none = $db->prepare('SELECT id, name FROM d1_people WHERE id < 0');
    return [
        'first' => attempt(fn () => $select->first()),
        'firstColumn' => attempt(fn () => $select->first('name')),
        'firstNullColumn' => attempt(fn () => $db->prepare("SELECT age FROM d1_people WHERE name = 'bob'")->first('age')),
        'firstMissingColumn' => attempt(fn () => $select->first('nope')),
        'firstEmpty' => attempt(fn () => $none->first()),
        'firstEmptyColumn' => attempt(fn () => $none->first('name')),
        'all' => attempt(fn () => $select->all()),
        'allEmpty' => attempt(fn () => $none->all()),
        'run' => attempt(fn () => $select->run()),
        'raw' => attempt(fn () => $select->raw()),
        'rawColumnNames' => attempt(fn () => $select->raw(['columnNames' => true])),
        'rawColumnNamesFalse' => attempt(fn () => $select->raw(['columnNames' => false])),
        'rawEmpty' => attempt(fn () => $none->raw()),
        'rawEmptyColumnNames' => attempt(fn () => $none->raw(['columnNames' => true])),
        'duplicateColumns' => attempt(fn () => $db->prepare('SELECT 1 AS a, 2 AS a, 3 AS b')->all()),
        'duplicateColumnsRaw' => attempt(fn () => $db->prepare('SELECT 1 AS a, 2 AS a, 3 AS b')->raw(['columnNames' => true])),
        'duplicateColumnsFirst' => attempt(fn () => $db->prepare('SELECT 1 AS a, 2 AS a')->first()),
        'expressionColumns' => attempt(fn () => $db->prepare("SELECT 1 + 1, upper('x'), count(*) FROM d1_people")->first()),
        'reuse' => attempt(function () use ($db) {
            $statement = $db->prepare('SELECT name FROM d1_people WHERE id = ?');
            return [$statement->bind(1)->first('name'), $statement->bind(3)->first('name'), $statement->bind(1)->first('name')];
        }),
        'rebind' => attempt(function () use ($db) {
            $statement = $db->prepare('SELECT ? AS v')->bind(1);
            return [$statement->first('v'), $statement->bind(2)->first('v')];
        }),
    ];
}

function d1_meta(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_meta (id INTEGER PRIMARY KEY, v TEXT)');
    $out = [];
    $out['insert'] = attempt(fn () => $db->prepare("INSERT INTO d1_meta (v) VALUES ('a')")->run());
    $out['insertMany'] = attempt(fn () => $db->prepare("INSERT INTO d1_meta (v) VALUES ('b'), ('c'), ('d')")->run());
    $out['insertExplicitId'] = attempt(fn () => $db->prepare("INSERT INTO d1_meta (id, v) VALUES (100, 'e')")->run());
    $out['select'] = attempt(fn () => $db->prepare('SELECT * FROM d1_meta ORDER BY id')->all());
    $out['selectRun'] = attempt(fn () => $db->prepare('SELECT count(*) AS n FROM d1_meta')->run());
    $out['update'] = attempt(fn () => $db->prepare("UPDATE d1_meta SET v = v || '!' WHERE id <= 3")->run());
    $out['updateNone'] = attempt(fn () => $db->prepare("UPDATE d1_meta SET v = 'x' WHERE id < 0")->run());
    $out['delete'] = attempt(fn () => $db->prepare('DELETE FROM d1_meta WHERE id = 100')->run());
    $out['returning'] = attempt(fn () => $db->prepare("INSERT INTO d1_meta (v) VALUES ('r') RETURNING id, v")->all());
    $out['createTable'] = attempt(fn () => $db->prepare('CREATE TABLE IF NOT EXISTS d1_meta_other (x)')->run());
    $out['dropTable'] = attempt(fn () => $db->prepare('DROP TABLE d1_meta_other')->run());
    $out['resultFields'] = attempt(function () use ($db) {
        $keys = array_keys($db->prepare('SELECT 1')->all());
        sort($keys);
        return $keys;
    });
    $out['metaFields'] = attempt(function () use ($db) {
        $keys = array_keys($db->prepare('SELECT 1')->all()['meta']);
        sort($keys);
        return $keys;
    });
    return $out;
}

function d1_batch(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_batch (id INTEGER PRIMARY KEY, v TEXT UNIQUE)');
    $insert = $db->prepare('INSERT INTO d1_batch (v) VALUES (?)');
    $count = static fn () => $db->prepare('SELECT count(*) AS n FROM d1_batch')->first('n');
    $out = [];
    $out['ok'] = attempt(fn () => $db->batch([
        $insert->bind('a'), $insert->bind('b'), $db->prepare('SELECT v FROM d1_batch ORDER BY v'), $db->prepare("UPDATE d1_batch SET v = v || '1'"),
    ]));
    $out['countAfterOk'] = $count();
    $out['rollback'] = attempt(fn () => $db->batch([$insert->bind('c'), $insert->bind('a1'), $insert->bind('d')]), ['/UNIQUE constraint failed/']);
    $out['countAfterRollback'] = $count();
    $out['rollbackSyntax'] = attempt(fn () => $db->batch([$insert->bind('e'), $db->prepare('INSER INTO d1_batch VALUES (1)')]), ['/syntax error/']);
    $out['countAfterSyntax'] = $count();
    $out['empty'] = attempt(fn () => $db->batch([]));
    $out['notStatements'] = attempt(fn () => $db->batch(['SELECT 1']));
    $out['readOnly'] = attempt(fn () => $db->batch([$db->prepare('SELECT 1 AS x'), $db->prepare('SELECT 2 AS y')]));
    $out['rows'] = attempt(fn () => $db->prepare('SELECT id, v FROM d1_batch ORDER BY id')->raw());
    return $out;
}

function d1_exec(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_exec (v TEXT UNIQUE)', 'CREATE TABLE d1_exec_other (v TEXT)');
    $out = [];
    $out['script'] = attempt(fn () => $db->exec("INSERT INTO d1_exec VALUES ('a');\nINSERT INTO d1_exec VALUES ('b');\n\nSELECT * FROM d1_exec;"));
    $out['single'] = attempt(fn () => $db->exec("INSERT INTO d1_exec VALUES ('c')"));
    $out['empty'] = attempt(fn () => $db->exec(''));
    $out['onlyComment'] = attempt(fn () => $db->exec('-- nothing'));
    $out['rows'] = attempt(fn () => $db->prepare('SELECT v FROM d1_exec ORDER BY v')->raw());
    $out['error'] = attempt(fn () => $db->exec("INSERT INTO d1_exec VALUES ('x');\nINSERT INTO d1_exec VALUES ('a');"), ['/UNIQUE constraint failed/']);
    $out['rowsAfterError'] = attempt(fn () => $db->prepare('SELECT v FROM d1_exec ORDER BY v')->raw());
    $out['syntaxError'] = attempt(fn () => $db->exec('SELEC 1'), ['/syntax error/']);
    $out['linesWithoutSemicolons'] = attempt(fn () => $db->exec("INSERT INTO d1_exec_other VALUES ('e')\nINSERT INTO d1_exec_other VALUES ('f')"));
    $out['twoOnOneLine'] = attempt(fn () => $db->exec("INSERT INTO d1_exec_other VALUES ('g'); INSERT INTO d1_exec_other VALUES ('h')"));
    $out['crlf'] = attempt(fn () => $db->exec("INSERT INTO d1_exec_other VALUES ('i')\r\nINSERT INTO d1_exec_other VALUES ('j')\r\n"));
    $out['otherRows'] = attempt(fn () => $db->prepare("SELECT v FROM d1_exec_other WHERE v >= 'e' ORDER BY v")->raw());
    $out['multiLineStatement'] = attempt(fn () => $db->exec("INSERT INTO d1_exec_other\nVALUES ('k')"));
    return $out;
}

function d1_blobs(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_blobs (id INTEGER PRIMARY KEY, b BLOB)');
    $all = bytesUpTo(256);
    $db->prepare('INSERT INTO d1_blobs (id, b) VALUES (1, ?), (2, ?), (3, ?)')->bind($all, '', substr($all, 250))->run();
    return [
        'all' => attempt(fn () => $db->prepare('SELECT id, length(b) AS n, hex(b) AS h FROM d1_blobs ORDER BY id')->all()),
        'roundTrip' => attempt(function () use ($db) {
            $back = $db->prepare('SELECT b FROM d1_blobs WHERE id = 1')->first('b');
            $db->prepare('INSERT INTO d1_blobs (id, b) VALUES (4, ?)')->bind($back)->run();
            return $db->prepare('SELECT b = (SELECT b FROM d1_blobs WHERE id = 1) AS same FROM d1_blobs WHERE id = 4')->first('same');
        }),
    ];
}

function d1_sqliteFeatures(Env $env): array
{
    $db = $env->APP_DB;
    freshTables(
        $db,
        'CREATE TABLE d1_parent (id INTEGER PRIMARY KEY)',
        'CREATE TABLE d1_child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES d1_parent (id))',
        'CREATE TABLE d1_strict (id INTEGER PRIMARY KEY, n INTEGER) STRICT',
    );
    return [
        'foreignKeys' => attempt(fn () => $db->prepare('INSERT INTO d1_child (parent) VALUES (99)')->run(), ['/FOREIGN KEY constraint failed/']),
        'foreignKeysPragma' => attempt(fn () => $db->prepare('PRAGMA foreign_keys')->first()),
        'strict' => attempt(fn () => $db->prepare("INSERT INTO d1_strict (n) VALUES ('text')")->run(), ['/cannot store TEXT value in INTEGER column/']),
        'jsonArrow' => attempt(fn () => $db->prepare("SELECT '{\"a\":[1,2]}' ->> '\$.a[1]' AS v")->first('v')),
        'jsonFunctions' => attempt(fn () => $db->prepare('SELECT json_object(\'k\', ?) AS j, json_array_length(?) AS n')->bind('v', '[1,2,3]')->first()),
        'begin' => attempt(fn () => $db->prepare('BEGIN TRANSACTION')->run()),
        'savepoint' => attempt(fn () => $db->prepare('SAVEPOINT s1')->run()),
        'like' => attempt(fn () => $db->prepare("SELECT 'ABC' LIKE 'abc' AS ci, 'é' LIKE 'É' AS unicode")->first()),
        'likeWithEscape' => attempt(fn () => $db->prepare("SELECT 'a%b' LIKE 'a!%b' ESCAPE '!' AS v")->first('v')),
        'math' => attempt(fn () => $db->prepare('SELECT 7 / 2 AS i, 7 / 2.0 AS f, 7 % 3 AS m, abs(-3) AS a, round(2.5) AS r')->first()),
        'mathFunctions' => attempt(fn () => $db->prepare('SELECT sqrt(16) AS s')->first('s')),
        'windowFunction' => attempt(fn () => $db->prepare('SELECT x, sum(x) OVER (ORDER BY x) AS running FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3)')->raw()),
        'cte' => attempt(fn () => $db->prepare('WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT group_concat(n) AS g FROM c')->first('g')),
        'upsert' => attempt(function () use ($db) {
            $db->prepare('INSERT INTO d1_parent (id) VALUES (1) ON CONFLICT (id) DO NOTHING')->run();
            return $db->prepare('INSERT INTO d1_parent (id) VALUES (1) ON CONFLICT (id) DO NOTHING')->run();
        }),
    ];
}

function d1_errors(Env $env): array
{
    $db = $env->APP_DB;
    freshTables($db, 'CREATE TABLE d1_errors (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE, n INTEGER CHECK (n > 0))');
    $db->prepare("INSERT INTO d1_errors (v, n) VALUES ('taken', 1)")->run();
    return [
        'noSuchTable' => attempt(fn () => $db->prepare('SELECT * FROM d1_no_such_table')->all(), ['/no such table/']),
        'noSuchColumn' => attempt(fn () => $db->prepare('SELECT nope FROM d1_errors')->all(), ['/no such column/']),
        'syntax' => attempt(fn () => $db->prepare('SELEC 1')->all(), ['/syntax error/']),
        'unique' => attempt(fn () => $db->prepare("INSERT INTO d1_errors (v, n) VALUES ('taken', 2)")->run(), ['/UNIQUE constraint failed/']),
        'notNull' => attempt(fn () => $db->prepare('INSERT INTO d1_errors (v) VALUES (NULL)')->run(), ['/NOT NULL constraint failed/']),
        'check' => attempt(fn () => $db->prepare("INSERT INTO d1_errors (v, n) VALUES ('y', 0)")->run(), ['/CHECK constraint failed/']),
        'tooFewParameters' => attempt(fn () => $db->prepare('SELECT ?, ?')->bind(1)->all()),
        'tooManyParameters' => attempt(fn () => $db->prepare('SELECT ?')->bind(1, 2)->all()),
        'numberedParameters' => attempt(fn () => $db->prepare('SELECT ?2 AS b, ?1 AS a, ?1 AS again')->bind('one', 'two')->first()),
        'namedParameters' => attempt(fn () => $db->prepare('SELECT :name AS v')->bind('x')->first()),
        'emptyStatement' => attempt(fn () => $db->prepare('')->all()),
        'onlyComment' => attempt(fn () => $db->prepare('-- nothing')->all()),
        'twoStatements' => attempt(fn () => $db->prepare('SELECT 1; SELECT 2')->all()),
        'firstUnknownColumnOnEmpty' => attempt(fn () => $db->prepare('SELECT v FROM d1_errors WHERE id < 0')->first('nope')),
        'stillThere' => attempt(fn () => $db->prepare('SELECT v, n FROM d1_errors')->all()),
    ];
}

/** Every scenario here, as "binding/name" => function, in the order they are written. */
function scenarios(): array
{
    $out = [];
    foreach ([
        'kv/missingKeys',
        'kv/readTypes',
        'kv/writeValueKinds',
        'kv/metadata',
        'kv/listOrder',
        'kv/listPaging',
        'kv/listPrefix',
        'kv/expiration',
        'kv/keyLimits',
        'kv/unusualText',
        'kv/cacheTtl',
        'kv/overwriteAndDelete',
        'r2/missing',
        'r2/putAndRead',
        'r2/keys',
        'r2/unusualText',
        'r2/ranges',
        'r2/conditionalGet',
        'r2/conditionalPut',
        'r2/metadata',
        'r2/list',
        'r2/deleteMany',
        'r2/weakEtags',
        'r2/conditionalPutMissing',
        'd1/valueTypes',
        'd1/firstAllRunRaw',
        'd1/meta',
        'd1/batch',
        'd1/exec',
        'd1/blobs',
        'd1/sqliteFeatures',
        'd1/errors',
    ] as $id) {
        $out[$id] = __NAMESPACE__ . '\\' . str_replace('/', '_', $id);
    }
    return $out;
}
