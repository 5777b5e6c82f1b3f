<?php
declare(strict_types=1);

namespace Bindingd;

/** A D1 database: prepare / batch / exec. Results have D1's shape as arrays. */
final class D1Database
{
    public function __construct(private readonly Transport $transport, public readonly string $binding)
    {
    }

    public function prepare(string $sql): D1PreparedStatement
    {
        return new D1PreparedStatement($this, $this->transport, $sql);
    }

    /**
     * Several statements in one transaction, all or nothing.
     *
     * @param list<D1PreparedStatement> $statements
     * @return list<array{results: list<array>, success: bool, meta: array}>
     */
    public function batch(array $statements): array
    {
        if ($statements === []) {
            throw new InvalidArgument('D1_ERROR: No SQL statements detected: batch() needs at least one statement', null, $this->binding);
        }
        $messages = [];
        foreach ($statements as $i => $statement) {
            if (!$statement instanceof D1PreparedStatement) {
                throw new \TypeError("batch() takes prepared statements; item $i is " . get_debug_type($statement));
            }
            $messages[] = $statement->message();
        }
        $answer = $this->transport->unary('Database/Batch', ['binding' => $this->binding, 'statements' => $messages]);
        return array_map(
            static fn (array $r): array => D1PreparedStatement::result($r['columns'] ?? [], $r['rows'] ?? [], $r['meta'] ?? []),
            $answer['results'] ?? [],
        );
    }

    /** A script of statements separated by `;`, without parameters: ['count' => n, 'duration' => ms]. */
    public function exec(string $sql): array
    {
        $answer = $this->transport->unary('Database/Exec', ['binding' => $this->binding, 'sql' => $sql]);
        return ['count' => (int) ($answer['count'] ?? 0), 'duration' => (float) ($answer['duration'] ?? 0)];
    }
}
