<?php
/**
 * Plugin Name: bindingd demo
 * Description: WordPress using bindingd bindings through the PHP client (clients/php): a view
 *   counter in a KV namespace, files in an objects bucket, a greeting var, and an upload key
 *   kept as a secret. The same code reaches the local simulation, or staging through the
 *   team's gateway, depending only on the env the daemon serves.
 * Version: 1.0
 *
 * Install as a must-use plugin: copy this file to wp-content/mu-plugins/ and the PHP client to
 * wp-content/mu-plugins/bindingd-php/ (or point BINDINGD_PHP_CLIENT at its autoload.php). The
 * daemon is found through BINDINGD_ENDPOINT (its socket, e.g. unix:///srv/app/.bindingd/bindingd.sock),
 * or from the web server's working folder like any client.
 *
 * Routes (under /wp-json/ or ?rest_route=):
 *   GET  bindingd/v1/fragment/recent    the recent posts as an HTML fragment, cached in the KV
 *                                       binding FRAGMENTS for a minute (X-Bindingd-Cache: hit|miss)
 *   POST bindingd/v1/guestbook          add {"name", "message"} to a table of the sql binding DB
 *   GET  bindingd/v1/guestbook          the entries, newest first
 *   POST bindingd/v1/views              count one view (KV binding VIEWS), answer {"views": n}
 *   GET  bindingd/v1/greeting           the GREETING var
 *   PUT  bindingd/v1/files/NAME         store the request body in UPLOADS; needs the header
 *                                       X-Upload-Key equal to the UPLOAD_KEY secret
 *   GET  bindingd/v1/files/NAME         the stored file, as it was put
 */

declare(strict_types=1);

require_once getenv('BINDINGD_PHP_CLIENT') ?: __DIR__ . '/bindingd-php/autoload.php';

/** One connection per PHP request (it lists the bindings once). */
function bindingd_demo_env(): \Bindingd\Env
{
    static $env = null;
    return $env ??= \Bindingd\connect();
}

/** A bindingd error as a REST error: its message says what to do, never a stack trace. */
function bindingd_demo_error(\Throwable $e): WP_Error
{
    $status = $e instanceof \Bindingd\PermissionDenied ? 403 : ($e instanceof \Bindingd\InvalidArgument ? 400 : 503);
    return new WP_Error('bindingd', $e->getMessage(), ['status' => $status]);
}

/** The recent posts' HTML, from the cache or made and cached for FRAGMENT_TTL seconds. */
const BINDINGD_DEMO_FRAGMENT_TTL = 60;

add_action('rest_api_init', static function (): void {
    register_rest_route('bindingd/v1', '/fragment/recent', [
        'methods' => 'GET',
        'permission_callback' => '__return_true',
        'callback' => static function () {
            try {
                $cache = bindingd_demo_env()->FRAGMENTS;
                $html = $cache->get('fragment:recent');
                $state = 'hit';
                if ($html === null) {
                    $state = 'miss';
                    $items = array_map(
                        static fn (WP_Post $post): string => '<li>' . esc_html(get_the_title($post)) . '</li>',
                        get_posts(['numberposts' => 5])
                    );
                    $html = '<ul class="recent">' . implode('', $items) . '</ul>';
                    $cache->put('fragment:recent', $html, ['expirationTtl' => BINDINGD_DEMO_FRAGMENT_TTL]);
                }
            } catch (\Bindingd\BindingError $e) {
                return bindingd_demo_error($e);
            }
            $response = new WP_REST_Response(['html' => $html]);
            $response->header('X-Bindingd-Cache', $state);
            return $response;
        },
    ]);
    register_rest_route('bindingd/v1', '/guestbook', [
        [
            'methods' => 'POST',
            'permission_callback' => '__return_true',
            'args' => [
                'name' => ['type' => 'string', 'required' => true, 'maxLength' => 100],
                'message' => ['type' => 'string', 'required' => true, 'maxLength' => 2000],
            ],
            'callback' => static function (WP_REST_Request $request) {
                try {
                    $db = bindingd_demo_env()->DB;
                    $db->exec('CREATE TABLE IF NOT EXISTS guestbook (id INTEGER PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL)');
                    $db->prepare('INSERT INTO guestbook (name, message) VALUES (?, ?)')
                        ->bind((string) $request['name'], (string) $request['message'])
                        ->run();
                    return ['ok' => true];
                } catch (\Bindingd\BindingError $e) {
                    return bindingd_demo_error($e);
                }
            },
        ],
        [
            'methods' => 'GET',
            'permission_callback' => '__return_true',
            'callback' => static function () {
                try {
                    $db = bindingd_demo_env()->DB;
                    $db->exec('CREATE TABLE IF NOT EXISTS guestbook (id INTEGER PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL)');
                    return $db->prepare('SELECT name, message FROM guestbook ORDER BY id DESC LIMIT 50')->all()['results'];
                } catch (\Bindingd\BindingError $e) {
                    return bindingd_demo_error($e);
                }
            },
        ],
    ]);
    register_rest_route('bindingd/v1', '/views', [
        'methods' => 'POST',
        'permission_callback' => '__return_true',
        'callback' => static function () {
            try {
                $kv = bindingd_demo_env()->VIEWS;
                $views = (int) ($kv->get('views') ?? '0') + 1;
                $kv->put('views', (string) $views);
                return ['views' => $views];
            } catch (\Bindingd\BindingError $e) {
                return bindingd_demo_error($e);
            }
        },
    ]);
    register_rest_route('bindingd/v1', '/greeting', [
        'methods' => 'GET',
        'permission_callback' => '__return_true',
        'callback' => static fn () => ['greeting' => bindingd_demo_env()->GREETING],
    ]);
    register_rest_route('bindingd/v1', '/files/(?P<name>[A-Za-z0-9._-]{1,100})', [
        [
            'methods' => 'PUT',
            // The upload key is a secret binding: it lives in the daemon's config (or the
            // gateway), never in wp-config.php.
            'permission_callback' => static fn (WP_REST_Request $request): bool => hash_equals(
                bindingd_demo_env()->UPLOAD_KEY,
                (string) $request->get_header('x-upload-key')
            ),
            'callback' => static function (WP_REST_Request $request) {
                try {
                    $type = $request->get_content_type()['value'] ?? 'application/octet-stream';
                    $stored = bindingd_demo_env()->UPLOADS->put($request['name'], $request->get_body(), [
                        'httpMetadata' => ['contentType' => $type],
                    ]);
                    return ['key' => $stored?->key, 'size' => $stored?->size, 'etag' => $stored?->etag];
                } catch (\Bindingd\BindingError $e) {
                    return bindingd_demo_error($e);
                }
            },
        ],
        [
            'methods' => 'GET',
            'permission_callback' => '__return_true',
            'callback' => static function (WP_REST_Request $request) {
                try {
                    $object = bindingd_demo_env()->UPLOADS->get($request['name']);
                } catch (\Bindingd\BindingError $e) {
                    return bindingd_demo_error($e);
                }
                if ($object === null) {
                    return new WP_Error('not_found', 'no such file', ['status' => 404]);
                }
                header('Content-Type: application/octet-stream');
                echo $object->bytes();
                exit;
            },
        ],
    ]);
});
