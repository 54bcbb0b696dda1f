/**
 * Answers requests Node's HTTP parser rejects, as Node itself does (400,
 * 431 for headers too large, 413 for chunk extensions, 408 for a request
 * timeout; `Connection: close`), with one difference: when the answer to the
 * previous request on the connection is still in flight, Node drops the
 * connection without a word. A blob sent with sendfile(2) is such an answer
 * from its last byte on the wire until its completion reaches the main
 * thread, so a client that sends its next (malformed) request as soon as it
 * has the body would see the connection simply close. Here the error answer
 * waits for the previous one to finish, then closes the connection.
 */
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';

function answerFor(code: string | undefined): string {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return '431 Request Header Fields Too Large';
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return '413 Payload Too Large';
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return '408 Request Timeout';
    default:
      return '400 Bad Request';
  }
}

interface InFlight {
  headersSent: boolean;
  writableFinished: boolean;
  once(event: 'finish' | 'close', fn: () => void): unknown;
}

export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const reply = () => {
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy();
        return;
      }
      socket.end(`HTTP/1.1 ${answerFor(err.code)}\r\nConnection: close\r\n\r\n`);
      socket.once('finish', () => socket.destroy());
    };
    const inFlight = (socket as unknown as { _httpMessage?: InFlight | null })._httpMessage;
    if (inFlight && inFlight.headersSent && !inFlight.writableFinished) {
      // Its bytes are (being) written: answer after them, never in the middle.
      let done = false;
      const once = (fn: () => void) => () => {
        if (done) return;
        done = true;
        fn();
      };
      inFlight.once('finish', once(reply));
      inFlight.once('close', once(() => socket.destroy()));
      return;
    }
    reply();
  });
}
