/** Join two sockets both ways; either end closing or failing closes the other. */
import type { Socket } from 'node:net';

export function splice(a: Socket, b: Socket): void {
  const end = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', end);
  b.on('error', end);
  a.on('close', end);
  b.on('close', end);
  a.pipe(b).pipe(a);
}
