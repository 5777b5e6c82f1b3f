<?php
declare(strict_types=1);

namespace Bindingd;

/**
 * The bindings of the daemon serving this project, as an Env: `$env->CACHE->get('k')`.
 *
 * The endpoint is the argument, else BINDINGD_ENDPOINT, else the `.bindingd/endpoint` the
 * daemon writes beside its config, found by walking up from the current folder (not past the
 * project's root, the folder of bindingd.yaml or a wrangler file), as the Python and Node
 * clients do. From a gRPC endpoint the HTTP one is derived: `.bindingd/bindingd.sock` → `.bindingd/http.sock`
 * (`X.sock` → `X.http.sock`), TCP `host:port` → `host:port+1`. An `http://host:port` endpoint is
 * the HTTP listener itself. The token (TCP only) is the argument, else BINDINGD_TOKEN, else
 * the project's `.bindingd/token` when the endpoint came from the project.
 */
function connect(?string $endpoint = null, ?string $token = null): Env
{
    return new Env(Discovery::transport($endpoint, $token));
}
