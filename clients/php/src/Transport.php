<?php
declare(strict_types=1);

namespace Bindingd;

/**
 * The daemon's HTTP/JSON endpoint over curl: the Connect protocol for the services, plain HTTP
 * for object bodies. One curl handle is reused, so calls share a keep-alive connection.
 *
 * @internal
 */
final class Transport
{
    public const START_HINT = 'start it with "bindingd serve" or run your command under "bindingd run -- ..."';
    private const ENVELOPE_END = 0x02;

    private \CurlHandle $curl;

    public function __construct(
        /** The HTTP unix socket (null for TCP). */
        public readonly ?string $socket,
        /** "http://bindingd" on a unix socket, else "http://127.0.0.1:PORT". */
        public readonly string $baseUrl,
        private readonly ?string $token,
    ) {
        $this->curl = curl_init();
    }

    public function describe(): string
    {
        return $this->socket !== null ? "unix://{$this->socket}" : $this->baseUrl;
    }

    /** One unary call: `$method` is "Service/Method" (e.g. "KV/Get"); answers the decoded JSON. */
    public function unary(string $method, array $request): array
    {
        [$status, , $body] = $this->send('POST', "/bindingd.v1.$method", ['Content-Type: application/json'], self::json($request));
        $decoded = json_decode($body, true);
        if ($status !== 200) {
            throw $this->error($status, $decoded, $body);
        }
        return is_array($decoded) ? $decoded : [];
    }

    /**
     * A server-streaming call (Connect streaming, JSON): the messages it answered, in order.
     * The answer is read whole before the first message is handed over (curl's easy interface);
     * for SQL that is one large result's remaining pages.
     *
     * @return list<array>
     */
    public function stream(string $method, array $request): array
    {
        $message = self::json($request);
        $envelope = pack('CN', 0, strlen($message)) . $message;
        [$status, , $body] = $this->send('POST', "/bindingd.v1.$method", ['Content-Type: application/connect+json'], $envelope);
        if ($status !== 200) {
            throw $this->error($status, json_decode($body, true), $body);
        }
        $messages = [];
        $offset = 0;
        while ($offset + 5 <= strlen($body)) {
            ['flags' => $flags, 'length' => $length] = unpack('Cflags/Nlength', substr($body, $offset, 5));
            $data = json_decode(substr($body, $offset + 5, $length), true);
            $offset += 5 + $length;
            if ($flags & self::ENVELOPE_END) {
                if (isset($data['error'])) {
                    throw Errors::fromConnect($data['error'], 200);
                }
                return $messages;
            }
            $messages[] = is_array($data) ? $data : [];
        }
        throw new DaemonUnavailable("bindingd's answer to $method ended without its end-of-stream message");
    }

    /**
     * A plain HTTP request (the object endpoint). `$body` is a string or a readable stream
     * (sent as it is read); with `$sink` the answer's body is written there as it arrives.
     *
     * @param list<string> $headers
     * @param resource|string|null $body
     * @param resource|null $sink
     * @return array{0: int, 1: array<string, string>, 2: string}
     */
    public function send(string $verb, string $path, array $headers, mixed $body = null, mixed $sink = null, bool $head = false): array
    {
        $curl = $this->curl;
        curl_reset($curl);
        $responseHeaders = [];
        $options = [
            CURLOPT_URL => $this->baseUrl . $path,
            // The path as given: no removal of "." / ".." segments, which are parts of a key.
            CURLOPT_PATH_AS_IS => true,
            CURLOPT_CUSTOMREQUEST => $verb,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_NOBODY => $head,
            CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
            CURLOPT_CONNECTTIMEOUT_MS => 5000,
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$responseHeaders): int {
                $parts = explode(':', $line, 2);
                if (count($parts) === 2) {
                    $responseHeaders[strtolower(trim($parts[0]))] = trim($parts[1]);
                } elseif (str_starts_with($line, 'HTTP/')) {
                    $responseHeaders = [];  // a new response (after 100 Continue)
                }
                return strlen($line);
            },
        ];
        if ($this->socket !== null) {
            $options[CURLOPT_UNIX_SOCKET_PATH] = $this->socket;
        }
        if ($this->token !== null) {
            $headers[] = "Authorization: Bearer {$this->token}";
        }
        if (is_string($body)) {
            $options[CURLOPT_POSTFIELDS] = $body;
        } elseif (is_resource($body)) {
            // Streamed from the handle, 256 KiB at a time: the whole body is never in memory.
            $options[CURLOPT_UPLOAD] = true;
            $options[CURLOPT_READFUNCTION] = static fn ($ch, $fh, int $length): string => (string) fread($body, $length);
            $headers[] = 'Transfer-Encoding: chunked';
            $headers[] = 'Expect:';
            $options[CURLOPT_UPLOAD_BUFFERSIZE] = 262144;
        }
        $errorBody = '';
        if ($sink !== null) {
            // Only a successful answer's body goes to the sink; an error's JSON is kept to decode.
            $options[CURLOPT_WRITEFUNCTION] = static function ($ch, string $data) use ($sink, &$errorBody): int {
                $code = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
                if ($code >= 200 && $code < 300) {
                    return (int) fwrite($sink, $data);
                }
                $errorBody .= $data;
                return strlen($data);
            };
        }
        $options[CURLOPT_HTTPHEADER] = $headers;
        curl_setopt_array($curl, $options);
        $answer = curl_exec($curl);
        if ($answer === false) {
            $why = curl_error($curl);
            throw new DaemonUnavailable("cannot reach bindingd at {$this->describe()} ($why); " . self::START_HINT);
        }
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        return [$status, $responseHeaders, $sink !== null ? $errorBody : (is_string($answer) ? $answer : '')];
    }

    public function error(int $status, mixed $decoded, string $raw): BindingError
    {
        if (is_array($decoded) && isset($decoded['code'])) {
            return Errors::fromConnect($decoded, $status);
        }
        $text = trim($raw) !== '' ? trim($raw) : "HTTP $status";
        return new BindingError("bindingd answered HTTP $status: $text", null, null, null, null, null, null, $status);
    }

    /** A request message as JSON; PHP's empty array is an empty message, not a list. */
    public static function json(array $message): string
    {
        return $message === [] ? '{}' : json_encode($message, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
    }
}
