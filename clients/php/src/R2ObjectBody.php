<?php
declare(strict_types=1);

namespace Bindingd;

/**
 * An object with its body (what get() returns): read it as a string (text(), bytes()), as JSON,
 * or as a PHP stream (body()). The body arrived into a php://temp stream, which keeps at most
 * 2 MiB in memory and the rest in a temporary file, so a large object does not fill PHP's memory.
 */
final class R2ObjectBody extends R2Object
{
    /** @var resource */
    private $stream;

    /** @param resource $stream */
    public static function withBody(R2Object $o, $stream): self
    {
        $body = new self($o->key, $o->version, $o->size, $o->etag, $o->httpEtag, $o->uploaded, $o->httpMetadata, $o->customMetadata, $o->range, $o->storageClass);
        $body->stream = $stream;
        return $body;
    }

    /** @return resource a readable stream at the body's start */
    public function body()
    {
        rewind($this->stream);
        return $this->stream;
    }

    public function text(): string
    {
        return (string) stream_get_contents($this->body());
    }

    public function bytes(): string
    {
        return $this->text();
    }

    public function arrayBuffer(): string
    {
        return $this->text();
    }

    public function json(): mixed
    {
        $text = $this->text();
        // A UTF-8 byte order mark is not JSON, but a reader of text skips it (as R2's json() does).
        if (str_starts_with($text, "\xEF\xBB\xBF")) {
            $text = substr($text, 3);
        }
        return json_decode($text, true, 512, JSON_THROW_ON_ERROR);
    }

    /** Copy the body into `$target` (a writable stream) without reading it whole. */
    public function writeTo($target): int
    {
        return (int) stream_copy_to_stream($this->body(), $target);
    }
}
