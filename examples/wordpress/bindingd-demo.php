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

add_action('rest_api_init', static function (): void {
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
