// What the browser scripts share: their `--name value` arguments and how they start
// Debian's headless Chromium (a fresh profile each run, nothing that calls home).

/** `--name value` pairs as an object; anything else is an error. */
export function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

/** The Chromium to drive: `--chromium`, else LATCHKEY_TEST_CHROMIUM, else Debian's. */
export function chromiumPath(args) {
  return args.chromium ?? process.env.LATCHKEY_TEST_CHROMIUM ?? '/usr/bin/chromium';
}

/** Chromium flags for a headless run on an offline machine (`extra` appended). */
export function chromiumArgs(...extra) {
  return [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ...extra,
  ];
}
