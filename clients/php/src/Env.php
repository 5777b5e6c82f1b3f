<?php
declare(strict_types=1);

namespace Bindingd;

/**
 * The project's bindings, by name, as Workers' `env`: KV namespaces, R2 buckets, D1 databases
 * and queues as objects, vars and secrets as strings.
 */
final class Env
{
    /** @var array<string, array{type: string}> */
    private array $bindings = [];
    /** @var array<string, string> */
    private array $values;
    /** @var array<string, object> */
    private array $cache = [];
    private string $env;

    public function __construct(private readonly Transport $transport)
    {
        $list = $transport->unary('Bindings/List', []);
        $this->env = (string) ($list['env'] ?? '');
        foreach ($list['bindings'] ?? [] as $info) {
            $this->bindings[$info['name']] = $info;
        }
        $this->values = $transport->unary('Vars/GetAll', [])['values'] ?? [];
    }

    /** The env the daemon serves (e.g. "dev", "staging"). */
    public function envName(): string
    {
        return $this->env;
    }

    /** @return array<string, string> binding name => type (kv, objects, sql, queue, var, secret) */
    public function bindings(): array
    {
        return array_map(static fn (array $info): string => (string) $info['type'], $this->bindings);
    }

    public function __isset(string $name): bool
    {
        return isset($this->bindings[$name]);
    }

    public function __get(string $name): KVNamespace|R2Bucket|D1Database|Queue|string
    {
        $type = $this->bindings[$name]['type'] ?? null;
        if ($type === 'var' || $type === 'secret') {
            return (string) ($this->values[$name] ?? '');
        }
        if (isset($this->cache[$name])) {
            return $this->cache[$name];
        }
        return $this->cache[$name] = match ($type) {
            'kv' => new KVNamespace($this->transport, $name),
            'objects' => new R2Bucket($this->transport, $name),
            'sql' => new D1Database($this->transport, $name),
            'queue' => new Queue($this->transport, $name),
            null => throw new BindingNotFound(
                "binding \"$name\" is not defined in env \"{$this->env}\" (defined: "
                . implode(', ', array_keys($this->bindings)) . ')',
                null,
                $name,
                $this->env,
            ),
            default => throw new WrongBindingType("binding \"$name\" has type $type, which this client does not serve", null, $name, $this->env),
        };
    }
}
