<?php
declare(strict_types=1);

use Bindingd\BindingError;
use Bindingd\BindingNotFound;
use Bindingd\DaemonUnavailable;
use Bindingd\AuthenticationFailed;
use Bindingd\Env;
use Bindingd\InvalidArgument;
use Bindingd\PermissionDenied;
use Bindingd\R2Object;
use Bindingd\R2ObjectBody;
use Bindingd\SqlError;
use Bindingd\WrongBindingType;
use PHPUnit\Framework\TestCase;

/**
 * Against a real daemon started by tests/php/test_php_client.py: BINDINGD_ENDPOINT names it,
 * BINDINGD_TEST_PROJECT is its project folder, BINDINGD_TEST_HTTP_TCP / _TOKEN its TCP listener.
 */
final class ClientTest extends TestCase
{
    private static Env $env;

    public static function setUpBeforeClass(): void
    {
        self::$env = Bindingd\connect();
    }

    private static function key(string $name): string
    {
        return $name . '-' . bin2hex(random_bytes(4));
    }

    public function testVarsAndSecretsAreStrings(): void
    {
        $this->assertSame('Example Shop', self::$env->SITE_NAME);
        $this->assertSame('s3cret', self::$env->API_KEY);
        $this->assertSame('dev', self::$env->envName());
        $this->assertSame('kv', self::$env->bindings()['CACHE']);
    }

    public function testKv(): void
    {
        $kv = self::$env->CACHE;
        $key = self::key('u:1');
        $this->assertNull($kv->get($key));
        $kv->put($key, json_encode(['name' => 'Ann', 'n' => 7]), ['expirationTtl' => 120, 'metadata' => ['v' => 2]]);
        $this->assertSame(['name' => 'Ann', 'n' => 7], $kv->get($key, 'json'));
        $this->assertSame('{"name":"Ann","n":7}', $kv->get($key));
        $this->assertSame('{"name":"Ann","n":7}', stream_get_contents($kv->get($key, 'stream')));
        $with = $kv->getWithMetadata($key, 'json');
        $this->assertSame(['v' => 2], $with['metadata']);
        $binary = random_bytes(64);
        $kv->put("$key:bin", $binary);
        $this->assertSame($binary, $kv->get("$key:bin", 'bytes'));
        $listed = $kv->list(['prefix' => $key]);
        $this->assertTrue($listed['list_complete']);
        $this->assertSame([$key, "$key:bin"], array_column($listed['keys'], 'name'));
        $this->assertSame(['v' => 2], $listed['keys'][0]['metadata']);
        $this->assertGreaterThan(time(), $listed['keys'][0]['expiration']);
        $page = $kv->list(['prefix' => $key, 'limit' => 1]);
        $this->assertFalse($page['list_complete']);
        $rest = $kv->list(['prefix' => $key, 'cursor' => $page['cursor']]);
        $this->assertSame(["$key:bin"], array_column($rest['keys'], 'name'));
        $kv->delete($key);
        $this->assertNull($kv->get($key));
    }

    public function testKvWrongTypes(): void
    {
        $this->expectException(TypeError::class);
        self::$env->CACHE->put('k', ['not' => 'a string']);
    }

    public function testObjectsStringsStreamsRangesConditionals(): void
    {
        $bucket = self::$env->ASSETS_BUCKET;
        $key = self::key('img/a b.jpg');
        $stored = $bucket->put($key, 'hello world', [
            'httpMetadata' => ['contentType' => 'image/jpeg', 'cacheControl' => 'max-age=60'],
            'customMetadata' => ['owner' => 'ann'],
            'md5' => md5('hello world'),
        ]);
        $this->assertInstanceOf(R2Object::class, $stored);
        $this->assertSame(md5('hello world'), $stored->etag);
        $this->assertSame(11, $stored->size);

        $got = $bucket->get($key);
        $this->assertInstanceOf(R2ObjectBody::class, $got);
        $this->assertSame('hello world', $got->text());
        $this->assertSame('hello world', stream_get_contents($got->body()));
        $this->assertSame('image/jpeg', $got->httpMetadata['contentType']);
        $this->assertSame(['owner' => 'ann'], $got->customMetadata);
        $this->assertSame($stored->version, $got->version);
        $this->assertSame($stored->uploaded->getTimestamp(), $got->uploaded->getTimestamp());

        $part = $bucket->get($key, ['range' => ['offset' => 6, 'length' => 5]]);
        $this->assertSame('world', $part->text());
        $this->assertSame(['offset' => 6, 'length' => 5], $part->range);
        $this->assertSame('hello', $bucket->get($key, ['range' => ['length' => 5]])->text());
        $this->assertSame('rld', $bucket->get($key, ['range' => ['suffix' => 3]])->text());

        $head = $bucket->head($key);
        $this->assertSame(11, $head->size);
        $this->assertSame($stored->etag, $head->etag);
        $this->assertNull($bucket->head(self::key('missing')));
        $this->assertNull($bucket->get(self::key('missing')));

        // onlyIf not met: the object without a body (R2Object, not R2ObjectBody).
        $unchanged = $bucket->get($key, ['onlyIf' => ['etagDoesNotMatch' => $stored->etag]]);
        $this->assertNotInstanceOf(R2ObjectBody::class, $unchanged);
        $this->assertSame($stored->etag, $unchanged->etag);
        $stale = $bucket->get($key, ['onlyIf' => ['etagMatches' => 'nope']]);
        $this->assertNotInstanceOf(R2ObjectBody::class, $stale);
        $this->assertNull($bucket->put($key, 'x', ['onlyIf' => ['etagMatches' => 'nope']]));
        $this->assertSame('hello world', $bucket->get($key)->text());

        // A file handle is streamed, never read whole.
        $file = tmpfile();
        $chunk = random_bytes(1 << 20);
        for ($i = 0; $i < 5; $i++) {
            fwrite($file, $chunk);
        }
        rewind($file);
        $big = $bucket->put("$key.big", $file, ['httpMetadata' => ['contentType' => 'application/octet-stream']]);
        $this->assertSame(5 << 20, $big->size);
        $out = tmpfile();
        $bucket->get("$key.big", ['sink' => $out]);
        $this->assertSame(5 << 20, fstat($out)['size']);
        rewind($out);
        $this->assertSame($chunk, fread($out, 1 << 20));

        $listed = $bucket->list(['prefix' => $key, 'include' => ['customMetadata']]);
        $this->assertSame([$key, "$key.big"], array_map(fn (R2Object $o) => $o->key, $listed['objects']));
        $this->assertSame(['owner' => 'ann'], $listed['objects'][0]->customMetadata);
        $this->assertFalse($listed['truncated']);

        $bucket->delete($key);
        $bucket->delete(["$key.big"]);
        $this->assertNull($bucket->head($key));
        $this->assertSame([], $bucket->list(['prefix' => $key])['objects']);
    }

    /**
     * Keys with "." / ".." segments are written under themselves: URL rules (curl's, a proxy's)
     * would remove those segments, and "../X/k" would have reached another binding's URL.
     */
    public function testDotSegmentKeysStayTheirOwnKeys(): void
    {
        $bucket = self::$env->ASSETS_BUCKET;
        $prefix = self::key('dots');
        $keys = ["$prefix/a/../b", "$prefix/./c", "$prefix/d/..", '../ASSETS_BUCKET/' . $prefix, '..', '.'];
        foreach ($keys as $key) {
            $this->assertSame($key, $bucket->put($key, "body of $key")->key);
            $this->assertSame("body of $key", $bucket->get($key)->text());
        }
        $listed = array_map(static fn ($o) => $o->key, $bucket->list(['prefix' => "$prefix/"])['objects']);
        $this->assertSame(["$prefix/./c", "$prefix/a/../b", "$prefix/d/.."], $listed);
        $this->assertNull($bucket->head("$prefix/b"));
        $this->assertNull($bucket->head($prefix));
        $bucket->delete($keys);
        // Custom metadata names that are no HTTP token, and empty values, arrive as they are.
        $meta = ['with space' => 'yes', 'empty' => '', 'zoë' => 'ü'];
        $bucket->put("$prefix/meta", 'x', ['customMetadata' => $meta]);
        $head = $bucket->head("$prefix/meta");
        ksort($meta);
        $got = $head->customMetadata;
        ksort($got);
        $this->assertSame($meta, $got);
        $this->assertSame([], $head->httpMetadata);  // no Content-Type of its own
        $bucket->delete("$prefix/meta");
    }

    public function testObjectMd5MismatchStoresNothing(): void
    {
        $bucket = self::$env->ASSETS_BUCKET;
        $key = self::key('md5');
        try {
            $bucket->put($key, 'abc', ['md5' => md5('other')]);
            $this->fail('a wrong md5 must fail');
        } catch (InvalidArgument $e) {
            $this->assertSame('INVALID_ARGUMENT', $e->reason);
            $this->assertSame('ASSETS_BUCKET', $e->binding);
        }
        $this->assertNull($bucket->head($key));
    }

    public function testSql(): void
    {
        $db = self::$env->APP_DB;
        $table = 't_' . bin2hex(random_bytes(4));
        $db->exec("CREATE TABLE $table (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)");
        $run = $db->prepare("INSERT INTO $table (name, score, data) VALUES (?, ?, ?)")->bind('Ann', 1.5, "\xff\x00")->run();
        $this->assertSame(1, $run['meta']['changes']);
        $this->assertSame(1, $run['meta']['last_row_id']);
        $results = $db->batch([
            $db->prepare("INSERT INTO $table (name) VALUES (?)")->bind('Bob'),
            $db->prepare("SELECT count(*) AS n FROM $table"),
        ]);
        $this->assertSame([['n' => 2]], $results[1]['results']);
        $all = $db->prepare("SELECT id, name, score, data FROM $table ORDER BY id")->all();
        $this->assertTrue($all['success']);
        $this->assertSame([
            ['id' => 1, 'name' => 'Ann', 'score' => 1.5, 'data' => "\xff\x00"],
            ['id' => 2, 'name' => 'Bob', 'score' => null, 'data' => null],
        ], $all['results']);
        $this->assertSame(['id' => 2, 'name' => 'Bob', 'score' => null, 'data' => null], $db->prepare("SELECT * FROM $table WHERE id = ?")->bind(2)->first());
        $this->assertSame('Ann', $db->prepare("SELECT name FROM $table WHERE id = ?")->bind(1)->first('name'));
        $this->assertNull($db->prepare("SELECT name FROM $table WHERE id = ?")->bind(99)->first());
        $this->assertSame([['id', 'name'], [1, 'Ann']], $db->prepare("SELECT id, name FROM $table WHERE id = 1")->raw(['columnNames' => true]));
        // A result larger than a page comes through Fetch (Connect streaming).
        $many = $db->prepare('WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1500) SELECT n FROM c')->raw();
        $this->assertCount(1500, $many);
        $this->assertSame([1500], $many[1499]);
        $this->assertSame(1, $db->prepare('WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1500) SELECT n FROM c')->first('n'));
        try {
            $db->prepare('SELEC 1')->all();
            $this->fail('bad SQL must fail');
        } catch (SqlError $e) {
            $this->assertSame('SQL_ERROR', $e->reason);
            $this->assertSame('APP_DB', $e->binding);
            $this->assertSame('dev', $e->env);
            $this->assertNotEmpty($e->requestId);
        }
        $this->expectException(TypeError::class);
        $db->prepare('SELECT ?')->bind(['array']);
    }

    public function testQueue(): void
    {
        $q = self::$env->JOBS;
        $q->send(['order' => 1]);
        $q->send('plain', ['contentType' => 'text', 'delaySeconds' => 0]);
        $q->sendBatch([['body' => ['order' => 2]], ['body' => 'raw', 'contentType' => 'bytes']], ['delaySeconds' => 0]);
        $this->expectException(ValueError::class);
        $q->send('x', ['contentType' => 'v8']);
    }

    public function testErrorClasses(): void
    {
        try {
            self::$env->NOPE;
            $this->fail('a missing binding must fail');
        } catch (BindingNotFound $e) {
            $this->assertSame('BINDING_NOT_FOUND', $e->reason);
            $this->assertSame('NOPE', $e->binding);
        }
        $this->assertInstanceOf(BindingError::class, new WrongBindingType('x'));
        // A binding the daemon does not know (the daemon's own error, through the wire).
        $kv = new Bindingd\KVNamespace(Bindingd\Discovery::transport(null, null), 'GONE');
        try {
            $kv->get('k');
            $this->fail('a missing binding must fail');
        } catch (BindingNotFound $e) {
            $this->assertSame(['BINDING_NOT_FOUND', 'GONE', 'dev'], [$e->reason, $e->binding, $e->env]);
            $this->assertSame(404, $e->httpStatus);
            $this->assertStringContainsString('GONE', $e->getMessage());
        }
        $wrong = new Bindingd\KVNamespace(Bindingd\Discovery::transport(null, null), 'ASSETS_BUCKET');
        try {
            $wrong->get('k');
            $this->fail('a binding of another type must fail');
        } catch (WrongBindingType $e) {
            $this->assertSame('WRONG_BINDING_TYPE', $e->reason);
        }
    }

    public function testReadOnlyBindingRefusesWrites(): void
    {
        try {
            self::$env->FROZEN->put('k', 'v');
            $this->fail('a read-only binding must refuse a put');
        } catch (PermissionDenied $e) {
            $this->assertSame(['PERMISSION_DENIED', 'FROZEN', 'dev', 403], [$e->reason, $e->binding, $e->env, $e->httpStatus]);
        }
        $this->assertNull(self::$env->FROZEN->get('k'));
    }

    public function testDaemonUnavailable(): void
    {
        try {
            Bindingd\connect('unix:///nonexistent/bindingd.sock');
            $this->fail('no daemon there');
        } catch (DaemonUnavailable $e) {
            $this->assertSame('DAEMON_UNAVAILABLE', $e->reason);
            $this->assertStringContainsString('/nonexistent/http.sock', $e->getMessage());
            $this->assertInstanceOf(BindingError::class, $e);
        }
    }

    public function testTcpWantsTheToken(): void
    {
        $tcp = getenv('BINDINGD_TEST_HTTP_TCP');
        $env = Bindingd\connect($tcp, getenv('BINDINGD_TEST_TOKEN'));
        $this->assertSame('Example Shop', $env->SITE_NAME);
        try {
            Bindingd\connect($tcp, 'wrong-token');
            $this->fail('a wrong token must fail');
        } catch (AuthenticationFailed $e) {
            $this->assertSame('AUTH_FAILED', $e->reason);
            $this->assertSame(401, $e->httpStatus);
        }
    }

    public function testDiscoveryWalksUpFromTheProject(): void
    {
        $project = getenv('BINDINGD_TEST_PROJECT');
        $saved = getenv('BINDINGD_ENDPOINT');
        putenv('BINDINGD_ENDPOINT');
        $cwd = getcwd();
        try {
            mkdir("$project/sub/dir", 0o755, true);
            chdir("$project/sub/dir");
            $this->assertSame('Example Shop', Bindingd\connect()->SITE_NAME);
        } finally {
            chdir($cwd);
            putenv("BINDINGD_ENDPOINT=$saved");
        }
    }
}
