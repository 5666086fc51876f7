import { strict as assert } from 'node:assert';
import { Progress, formatDuration, formatNumber, formatRate, type ProgressStream } from '../cli/progress.ts';

class FakeStream implements ProgressStream {
  chunks: string[] = [];
  constructor(
    public isTTY: boolean,
    public columns?: number,
  ) {}
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  get text(): string {
    return this.chunks.join('');
  }
  /** Plain mode: the printed lines. */
  get lines(): string[] {
    return this.text.split('\n').filter(l => l !== '');
  }
}

/** A manual clock in milliseconds. */
function clock(start = 1000) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

describe('progress formatting helpers', () => {
  it('formats numbers, rates and durations', () => {
    assert.equal(formatNumber(0.1234), '0.1234');
    assert.equal(formatNumber(0.123456), '0.1235');
    assert.equal(formatNumber(0.5), '0.5');
    assert.equal(formatNumber(42), '42');
    assert.equal(formatNumber(1e-5), '1.00e-5');
    assert.equal(formatRate(1234.4), '1234');
    assert.equal(formatRate(12.34), '12.3');
    assert.equal(formatRate(1.5), '1.5');
    assert.equal(formatDuration(42), '42s');
    assert.equal(formatDuration(185), '3m05s');
    assert.equal(formatDuration(3720), '1h02m');
    assert.equal(formatDuration(Infinity), '?');
  });
});

describe('Progress (plain, not a TTY)', () => {
  it('prints a readable line with percent, count, rate, info and eta', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'train epoch 1/10', total: 235, stream: s, unit: 'img', now: c.now });
    c.advance(47_000);
    p.update(58, { loss: 0.12341 });
    assert.equal(s.lines.length, 1);
    // 58 in 47 s -> 1.234/s; (235-58)/1.234 = 143.4 s
    assert.equal(s.lines[0], 'train epoch 1/10: 24% (58/235) 1.23 img/s loss=0.1234 eta 2m23s');
    assert.ok(!s.text.includes('\r'), 'no carriage returns in plain mode');
  });

  it('matches the documented example format', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'train epoch 1/10', total: 1000, stream: s, unit: 'img', now: c.now });
    c.advance(1000);
    p.update(250, { loss: 0.1234 });
    assert.equal(s.lines[0], 'train epoch 1/10: 25% (250/1000) 250 img/s loss=0.1234 eta 3s');
  });

  it('throttles to one line per 10% or per interval', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'x', total: 1000, stream: s, now: c.now });
    // 1000 quick updates, 1 ms apart: only the 10% crossings print (10 lines: 10%, 20%, ..., 100%).
    for (let i = 1; i <= 1000; i++) {
      c.advance(1);
      p.update(i);
    }
    assert.equal(s.lines.length, 10);
    assert.deepEqual(
      s.lines.map(l => l.split(' ')[1]),
      ['10%', '20%', '30%', '40%', '50%', '60%', '70%', '80%', '90%', '100%'],
    );
  });

  it('prints a heartbeat line when progress is slow', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'x', total: 1000, stream: s, now: c.now, plainIntervalMs: 5000 });
    for (let i = 1; i <= 30; i++) {
      c.advance(1000); // 1 unit per second: never reaches 10% in 30 s
      p.update(i);
    }
    // one line every 5 s
    assert.equal(s.lines.length, 6);
    assert.match(s.lines[0], /^x: 0% \(5\/1000\) 1(\.0)? it\/s eta 16m35s$/);
  });

  it('done() prints a summary line once; updates after done are ignored', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'eval', total: 100, stream: s, unit: 'img', now: c.now });
    c.advance(2000);
    p.update(100, { acc: 0.98765 });
    p.done({ loss: 0.05 });
    p.done('again');
    p.update(50);
    assert.equal(s.lines.length, 2);
    assert.equal(s.lines[1], 'eval: done (100/100) in 2s 50 img/s acc=0.9877 loss=0.05');
  });

  it('handles a zero total and missing rate without NaN', () => {
    const s = new FakeStream(false);
    const c = clock();
    const p = new Progress({ label: 'load', total: 0, stream: s, now: c.now });
    p.update(0);
    c.advance(6000);
    p.update(3);
    p.done('ok');
    assert.ok(!/NaN|Infinity/.test(s.text), s.text);
    assert.equal(s.lines[s.lines.length - 1], 'load: done (3) in 6s 0.5 it/s ok');
  });
});

describe('Progress (TTY)', () => {
  it('redraws a single line in place with a bar', () => {
    const s = new FakeStream(true);
    const c = clock();
    const p = new Progress({ label: 'train', total: 200, stream: s, unit: 'img', now: c.now });
    c.advance(1000);
    p.update(50, { loss: 0.5 });
    assert.equal(s.chunks.length, 1);
    const chunk = s.chunks[0];
    assert.ok(chunk.startsWith('\r'), 'starts with carriage return');
    assert.ok(chunk.endsWith('\x1b[K'), 'clears the rest of the line');
    assert.ok(!chunk.includes('\n'), 'no newline while running');
    assert.equal(chunk.slice(1, -3), 'train: [#####---------------]  25% (50/200) 50 img/s loss=0.5 eta 3s');
  });

  it('throttles redraws to at most ~10 per second', () => {
    const s = new FakeStream(true);
    const c = clock();
    const p = new Progress({ label: 't', total: 100_000, stream: s, now: c.now });
    // 2 seconds of updates every 5 ms = 400 updates -> at most 20 redraws (+1 for the first)
    for (let i = 1; i <= 400; i++) {
      c.advance(5);
      p.update(i);
    }
    assert.ok(s.chunks.length >= 19 && s.chunks.length <= 21, `redraws: ${s.chunks.length}`);
    // every redraw is a single in-place line
    for (const ch of s.chunks) assert.ok(ch.startsWith('\r') && !ch.includes('\n'));
  });

  it('always draws completion, and done() ends the line with a newline', () => {
    const s = new FakeStream(true);
    const c = clock();
    const p = new Progress({ label: 't', total: 10, stream: s, now: c.now });
    c.advance(10);
    p.update(9);
    c.advance(1); // within the throttle interval, but complete
    p.update(10, { loss: 0.25 });
    assert.equal(s.chunks.length, 2);
    assert.match(s.chunks[1], /100% \(10\/10\)/);
    p.done();
    assert.ok(s.text.endsWith('\n'));
    assert.equal(s.text.split('\n').length, 2, 'exactly one newline in total');
    assert.match(s.chunks[s.chunks.length - 2], /^\rt: done \(10\/10\) in 0s 909 it\/s loss=0\.25\x1b\[K$/);
  });

  it('truncates to the terminal width', () => {
    const s = new FakeStream(true, 30);
    const p = new Progress({ label: 'a long label for a narrow terminal', total: 10, stream: s, now: clock().now });
    p.update(1);
    assert.equal(s.chunks[0].length, 1 + 29 + 3);
  });

  it('log() prints above the bar and redraws it', () => {
    const s = new FakeStream(true);
    const c = clock();
    const p = new Progress({ label: 't', total: 10, stream: s, now: c.now });
    c.advance(1000);
    p.update(5);
    p.log('epoch 1 finished');
    const last = s.chunks[s.chunks.length - 1];
    assert.ok(last.startsWith('\r\x1b[Kepoch 1 finished\n'));
    assert.ok(last.endsWith('t: [##########----------]  50% (5/10) 5 it/s eta 1s'));
  });

  it('the tty option overrides stream.isTTY', () => {
    const s = new FakeStream(true);
    const p = new Progress({ label: 't', total: 10, stream: s, now: clock().now, tty: false });
    p.update(5);
    assert.ok(!s.text.includes('\r'));
  });
});
