<?php
declare(strict_types=1);

namespace Bindingd;

/** A statement with its bound values; bind() returns a new statement, as D1's does. */
final class D1PreparedStatement
{
    /** What meta's served_by says (the other clients say the same; D1 names its store). */
    private const SERVED_BY = 'bindingd';
    private const META = ['duration' => 0.0, 'changes' => 0, 'lastRowId' => 0, 'changedDb' => false, 'rowsRead' => 0, 'rowsWritten' => 0];

    /** @param list<mixed> $params */
    public function __construct(
        private readonly D1Database $db,
        private readonly Transport $transport,
        public readonly string $sql,
        private readonly array $params = [],
    ) {
    }

    public function bind(mixed ...$values): self
    {
        foreach ($values as $i => $v) {
            if (!($v === null || is_bool($v) || is_int($v) || is_float($v) || is_string($v))) {
                throw new \TypeError("D1_TYPE_ERROR: bound value $i has type " . get_debug_type($v) . ' (use null, bool, int, float or string)');
            }
        }
        return new self($this->db, $this->transport, $this->sql, array_values($values));
    }

    /** @return array{results: list<array<string, mixed>>, success: bool, meta: array} */
    public function all(): array
    {
        [$columns, $rows, $meta] = $this->collect();
        return self::result($columns, $rows, $meta);
    }

    public function run(): array
    {
        return $this->all();
    }

    /** The rows as lists of values; with `['columnNames' => true]` the first row is the names. */
    public function raw(array $options = []): array
    {
        [$columns, $rows] = $this->collect();
        $values = array_map([self::class, 'values'], $rows);
        return ($options['columnNames'] ?? false) ? [$columns, ...$values] : $values;
    }

    /** The first row (or its `$column`), null when there is none; the rest is never sent. */
    public function first(?string $column = null): mixed
    {
        $answer = $this->transport->unary('Database/Query', $this->request());
        if (($answer['cursor'] ?? '') !== '') {
            $this->transport->unary('Database/CloseCursor', ['binding' => $this->db->binding, 'cursor' => $answer['cursor']]);
        }
        $columns = $answer['columns'] ?? [];
        $row = isset($answer['rows'][0]) ? array_combine($columns, self::values($answer['rows'][0])) : null;
        if ($column === null || $row === null) {
            return $row;  // no row: null whatever the column, as in D1
        }
        if (!in_array($column, $columns, true)) {
            throw new SqlError("D1_COLUMN_NOTFOUND: column \"$column\" is not in the result (columns: " . implode(', ', $columns) . ')', null, $this->db->binding);
        }
        return $row[$column] ?? null;
    }

    /** @internal the SqlStatement message */
    public function message(): array
    {
        $statement = ['sql' => $this->sql];
        if ($this->params !== []) {
            $statement['params'] = array_map([self::class, 'encode'], $this->params);
        }
        return $statement;
    }

    /** @internal */
    public static function result(array $columns, array $rows, array $meta): array
    {
        $results = array_map(static fn (array $row): array => array_combine($columns, self::values($row)), $rows);
        $out = [];
        foreach (self::META as $name => $default) {
            $value = $meta[$name] ?? $default;
            $out[self::snake($name)] = is_float($default) ? (float) $value : (is_bool($default) ? (bool) $value : (int) $value);
        }
        $out['size_after'] = isset($meta['sizeAfter']) ? (int) $meta['sizeAfter'] : null;
        $out['served_by'] = self::SERVED_BY;
        return ['results' => $results, 'success' => true, 'meta' => $out];
    }

    private function request(): array
    {
        return ['binding' => $this->db->binding, 'statement' => $this->message()];
    }

    /** @return array{0: list<string>, 1: list<array>, 2: array} columns, rows, meta */
    private function collect(): array
    {
        $answer = $this->transport->unary('Database/Query', $this->request());
        $columns = $answer['columns'] ?? [];
        $rows = $answer['rows'] ?? [];
        $meta = $answer['meta'] ?? [];
        if (($answer['cursor'] ?? '') !== '') {
            // A large result: its other pages stream from Fetch (Connect streaming).
            $pages = $this->transport->stream('Database/Fetch', ['binding' => $this->db->binding, 'cursor' => $answer['cursor']]);
            foreach ($pages as $page) {
                array_push($rows, ...($page['rows'] ?? []));
                $meta = $page['meta'] ?? $meta;
            }
        }
        return [$columns, $rows, $meta];
    }

    private static function encode(mixed $v): array
    {
        return match (true) {
            $v === null => ['null' => true],
            is_bool($v) => ['boolean' => $v],
            is_int($v) => ['integer' => (string) $v],
            is_float($v) => ['real' => is_finite($v) ? $v : (is_nan($v) ? 'NaN' : ($v > 0 ? 'Infinity' : '-Infinity'))],
            // A PHP string is bytes: UTF-8 text binds as TEXT, anything else as a BLOB.
            preg_match('//u', $v) === 1 => ['text' => $v],
            default => ['blob' => base64_encode($v)],
        };
    }

    private static function values(array $row): array
    {
        return array_map(static function (array $v): mixed {
            $kind = array_key_first($v);
            return match ($kind) {
                null, 'null' => null,
                'integer' => (int) $v['integer'],
                'real' => match ($v['real']) { 'NaN' => NAN, 'Infinity' => INF, '-Infinity' => -INF, default => (float) $v['real'] },
                'blob' => base64_decode($v['blob'], true),
                'boolean' => (bool) $v['boolean'],
                default => $v[$kind],
            };
        }, $row['values'] ?? []);
    }

    private static function snake(string $name): string
    {
        return strtolower((string) preg_replace('/[A-Z]/', '_$0', $name));
    }
}
