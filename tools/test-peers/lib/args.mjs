// Tiny argv parser shared by the peers: `--flag value`, `--flag=value`, boolean `--flag`,
// repeatable options collected into arrays. Unknown flags are an error (a typo in a test
// must not silently start a differently configured peer).

export function parseArgs(argv, spec) {
  const out = {};
  for (const [name, def] of Object.entries(spec)) {
    if (def.repeat) out[name] = [];
    else if (def.type === 'boolean') out[name] = false;
    else if ('default' in def) out[name] = def.default;
  }
  for (let i = 0; i < argv.length; i += 1) {
    let arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new Error(`unexpected argument: ${arg}`);
    let value;
    const eq = arg.indexOf('=');
    if (eq !== -1) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const name = arg.slice(2);
    const def = spec[name];
    if (!def) throw new Error(`unknown option: ${arg}`);
    if (def.type === 'boolean') {
      if (value !== undefined) throw new Error(`${arg} takes no value`);
      out[name] = true;
      continue;
    }
    if (value === undefined) {
      i += 1;
      if (i >= argv.length) throw new Error(`${arg} needs a value`);
      value = argv[i];
    }
    if (def.type === 'number') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${arg} needs a non-negative integer`);
      value = n;
    }
    if (def.repeat) out[name].push(value);
    else out[name] = value;
  }
  return out;
}

export function usage(title, spec) {
  const lines = [title, '', 'Options:'];
  for (const [name, def] of Object.entries(spec)) {
    const arg = def.type === 'boolean' ? '' : ` ${def.arg || 'VALUE'}`;
    lines.push(`  --${name}${arg}`.padEnd(40) + (def.help || ''));
  }
  return lines.join('\n');
}

// One line on stderr, prefixed so interleaved output of several peers stays readable.
export function logger(prefix) {
  return (...parts) => {
    process.stderr.write(`[${prefix}] ${parts.join(' ')}\n`);
  };
}

export function isLoopbackHost(hostname) {
  return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]' || hostname === '::1';
}
