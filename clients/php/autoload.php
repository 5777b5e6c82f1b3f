<?php
// For use without Composer: `require 'clients/php/autoload.php';` (Composer users get the same
// from the package's autoload section).
declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Bindingd\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 9)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
require_once __DIR__ . '/src/errors.php';
require_once __DIR__ . '/src/functions.php';
