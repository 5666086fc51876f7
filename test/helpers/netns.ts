// A small private network of Linux network namespaces for multi-host tests: one namespace per "host", each
// with its own address on a veth pair whose other end is on a bridge that lives in a namespace of its own.
// Nothing is created in the caller's namespace, and every name carries the test process's pid, so that
// leftovers of a crashed run can be told apart from a run in progress and removed (cleanLeftovers).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export const NETNS_TAG = 'fnt';

/** The ip command (iproute2), or null. */
export function ipCommand(): string | null {
  for (const c of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip']) if (fs.existsSync(c)) return c;
  return spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0 ? 'ip' : null;
}

/** Why namespaces cannot be used here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root (the test runs as uid ' + process.getuid?.() + ')';
  const ip = ipCommand();
  if (!ip) return 'the ip command (iproute2) is not installed';
  const probe = `${NETNS_TAG}${process.pid}-probe`;
  const add = spawnSync(ip, ['netns', 'add', probe], { encoding: 'utf8' });
  spawnSync(ip, ['netns', 'del', probe], { stdio: 'ignore' });
  return add.status === 0 ? null : `ip netns add failed: ${add.stderr.trim()}`;
}

function ip(args: string[]): string {
  const r = spawnSync(ipCommand()!, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
  return r.stdout;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Deletes the namespaces of earlier runs whose process is gone (never those of a live run). Returns their names. */
export function cleanLeftovers(): string[] {
  const removed: string[] = [];
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(/\s/)[0];
    const m = new RegExp(`^${NETNS_TAG}(\\d+)-`).exec(name);
    if (m && !alive(Number(m[1]))) {
      spawnSync(ipCommand()!, ['netns', 'del', name], { stdio: 'ignore' });
      removed.push(name);
    }
  }
  return removed;
}

export interface Host {
  name: string;
  ns: string;
  addr: string;
  bridgePort: string;
}

export class Lan {
  readonly hosts = new Map<string, Host>();
  readonly bridgeNs: string;
  private readonly namespaces: string[] = [];
  /** Every namespace ever created here (to check afterwards that none is left). */
  readonly created: string[] = [];
  private readonly onExit = () => this.destroy();

  /** subnet: the first three octets of a private /24 used only inside these namespaces, e.g. "10.213.7". */
  constructor(
    readonly subnet: string,
    readonly id = `${NETNS_TAG}${process.pid}`,
  ) {
    this.bridgeNs = `${id}-switch`;
    process.on('exit', this.onExit); // a safety net: after() hooks do the real cleanup
  }

  private addNs(name: string) {
    ip(['netns', 'add', name]);
    this.namespaces.push(name);
    this.created.push(name);
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
  }

  /** The switch: a bridge in its own namespace. */
  createSwitch(): void {
    this.addNs(this.bridgeNs);
    ip(['-n', this.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', this.bridgeNs, 'link', 'set', 'br0', 'up']);
  }

  /** A host: its namespace, eth0 with subnet.octet/24, cabled to the switch. */
  addHost(name: string, octet: number): Host {
    const h: Host = {
      name,
      ns: `${this.id}-${name}`,
      addr: `${this.subnet}.${octet}`,
      bridgePort: `p-${name}`.slice(0, 15),
    };
    this.addNs(h.ns);
    ip(['-n', this.bridgeNs, 'link', 'add', h.bridgePort, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
    ip(['-n', this.bridgeNs, 'link', 'set', h.bridgePort, 'master', 'br0']);
    ip(['-n', this.bridgeNs, 'link', 'set', h.bridgePort, 'up']);
    ip(['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', 'eth0']);
    ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    this.hosts.set(name, h);
    return h;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  /** The command prefix that runs a program on a host. */
  exec(name: string): string[] {
    return [ipCommand()!, 'netns', 'exec', this.host(name).ns];
  }

  /** Pulls a host's cable at the switch (its own eth0 stays up, as when a switch port or a link fails). */
  cut(name: string): void {
    ip(['-n', this.bridgeNs, 'link', 'set', this.host(name).bridgePort, 'down']);
  }

  /** Whether the switch port of a host is up. */
  linkUp(name: string): boolean {
    return /state UP|<[^>]*\bUP\b/.test(ip(['-n', this.bridgeNs, 'link', 'show', this.host(name).bridgePort]));
  }

  /** The namespaces this Lan created that still exist. */
  existing(): string[] {
    const listed = new Set(
      ip(['netns', 'list'])
        .split('\n')
        .map(l => l.split(/\s/)[0]),
    );
    return this.created.filter(n => listed.has(n));
  }

  /** Deletes every namespace (their veths go with them); safe to call twice. */
  destroy(): void {
    for (const n of this.namespaces.splice(0).reverse())
      spawnSync(ipCommand()!, ['netns', 'del', n], { stdio: 'ignore' });
    process.off('exit', this.onExit);
  }
}
