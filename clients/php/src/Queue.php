<?php
declare(strict_types=1);

namespace Bindingd;

/** A queue producer: send / sendBatch, as Workers' Queue binding. */
final class Queue
{
    private const CONTENT_TYPES = ['json', 'text', 'bytes'];

    public function __construct(private readonly Transport $transport, public readonly string $binding)
    {
    }

    /** Options: contentType ("json" by default, "text", "bytes"), delaySeconds. */
    public function send(mixed $body, array $options = []): void
    {
        $this->transport->unary('Queue/Send', ['binding' => $this->binding, 'message' => self::message($body, $options)]);
    }

    /**
     * @param list<array{body: mixed, contentType?: string, delaySeconds?: int}> $messages
     * @param array{delaySeconds?: int} $options
     */
    public function sendBatch(array $messages, array $options = []): void
    {
        $request = ['binding' => $this->binding, 'messages' => []];
        foreach ($messages as $i => $m) {
            if (!is_array($m) || !array_key_exists('body', $m)) {
                throw new \TypeError("sendBatch message $i must be an array with a 'body'");
            }
            $request['messages'][] = self::message($m['body'], $m);
        }
        if (isset($options['delaySeconds'])) {
            $request['delaySeconds'] = (int) $options['delaySeconds'];
        }
        $this->transport->unary('Queue/SendBatch', $request);
    }

    private static function message(mixed $body, array $options): array
    {
        $type = $options['contentType'] ?? 'json';
        if (!in_array($type, self::CONTENT_TYPES, true)) {
            throw new \ValueError("contentType must be \"json\", \"text\" or \"bytes\", not \"$type\"");
        }
        if ($type !== 'json' && !is_string($body)) {
            throw new \TypeError("a $type message body must be a string, not " . get_debug_type($body));
        }
        $data = $type === 'json' ? json_encode($body, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE) : $body;
        $message = ['body' => base64_encode($data), 'contentType' => $type];
        if (isset($options['delaySeconds'])) {
            $message['delaySeconds'] = (int) $options['delaySeconds'];
        }
        return $message;
    }
}
