/** `-f FILE|DIR|-` → manifest texts, in the order given (a directory's files by name). */
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { InputProblem, ManifestSource } from './source.ts';

export const MANIFEST_EXTENSIONS: readonly string[] = ['.yaml', '.yml', '.json'];
export const STDIN = '-';
export const STDIN_NAME = '<stdin>';

export interface ReadInputs {
  readonly sources: readonly ManifestSource[];
  readonly problems: readonly InputProblem[];
}

export async function readInputs(names: readonly string[], o: { recursive: boolean; readStdin: () => Promise<string> }): Promise<ReadInputs> {
  const sources: ManifestSource[] = [];
  const problems: InputProblem[] = [];
  for (const name of names) {
    if (name === STDIN) {
      sources.push({ name: STDIN_NAME, path: undefined, text: await o.readStdin() });
      continue;
    }
    let isDir: boolean;
    try {
      isDir = (await stat(name)).isDirectory();
    } catch (error) {
      problems.push({ file: name, message: fsMessage(error) });
      continue;
    }
    const files = isDir ? await listManifests(name, o.recursive) : [name];
    if (isDir && files.length === 0) {
      problems.push({ file: name, message: `no ${MANIFEST_EXTENSIONS.join(', ')} files in this directory${o.recursive ? '' : ' (-R reads subdirectories)'}` });
    }
    for (const file of files) {
      try {
        sources.push({ name: file, path: file, text: await readFile(file, 'utf8') });
      } catch (error) {
        problems.push({ file, message: fsMessage(error) });
      }
    }
  }
  return { sources, problems };
}

async function listManifests(dir: string, recursive: boolean): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out: string[] = [];
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      if (recursive) out.push(...(await listManifests(path, true)));
    } else if (MANIFEST_EXTENSIONS.includes(extname(e.name).toLowerCase())) out.push(path);
  }
  return out;
}

function fsMessage(error: unknown): string {
  const code = (error as { code?: string }).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return error instanceof Error ? error.message : String(error);
}
