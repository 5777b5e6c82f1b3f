<?php
// KV get through the PHP client, sequential: prints "p50_ms p99_ms calls_per_s".
// php bench/kv_get.php N   (BINDINGD_ENDPOINT names the daemon)
declare(strict_types=1);
require __DIR__ . '/../clients/php/autoload.php';

$n = (int) ($argv[1] ?? 1000);
$kv = Bindingd\connect()->CACHE;
for ($i = 0; $i < 50; $i++) {
    $kv->get('bench');
}
$times = [];
$start = hrtime(true);
for ($i = 0; $i < $n; $i++) {
    $t = hrtime(true);
    $kv->get('bench');
    $times[] = (hrtime(true) - $t) / 1e6;
}
$elapsed = (hrtime(true) - $start) / 1e9;
sort($times);
printf("%.4f %.4f %.1f\n", $times[intdiv($n, 2)], $times[(int) round(0.99 * ($n - 1))], $n / $elapsed);
