<?php
// Runs the PHP differential scenarios against the daemon Bindingd\connect() finds and prints
// {"binding/name": {"result": ..., "messages": [...]}} (or "failed" for one that threw) as JSON.
//
//   php run.php [binding/name ...]
//   php run.php --list
declare(strict_types=1);

require __DIR__ . '/../../autoload.php';
require __DIR__ . '/scenarios.php';

$all = BindingdDifferential\scenarios();
if (($argv[1] ?? '') === '--list') {
    echo implode("\n", array_keys($all)), "\n";
    exit(0);
}
$ids = array_slice($argv, 1) ?: array_keys($all);
$env = Bindingd\connect();
$answers = [];
foreach ($ids as $id) {
    if (!isset($all[$id])) {
        fwrite(STDERR, "no such scenario: $id\n");
        exit(2);
    }
    $GLOBALS['differential_messages'] = [];
    try {
        $answers[$id] = ['result' => BindingdDifferential\normalise(($all[$id])($env)), 'messages' => $GLOBALS['differential_messages']];
    } catch (Throwable $e) {
        $answers[$id] = ['failed' => get_class($e), 'messages' => [...$GLOBALS['differential_messages'], (string) $e]];
    }
}
echo json_encode($answers, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRESERVE_ZERO_FRACTION), "\n";
