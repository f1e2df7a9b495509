// rte-agent's page: the board at a glance, its console, its runs. Everything comes from the API
// with the user's bearer token, kept in session storage (no cookies: no CSRF). Typing, pressing
// and power need the lease token, which only the holder's browser has.
'use strict';

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
const state = { me: null, status: null, leases: null, lines: [], runs: [], selectedRun: null, holding: false };
// Keystroke-to-echo times (ms), for the test suite and the curious: see the console panel.
window.rteEcho = [];

function message(text) { $('message').textContent = text || ''; }

async function api(method, path, body, options = {}) {
  const headers = {};
  const token = store.getItem('rte-token');
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const lease = store.getItem('rte-lease');
  if (lease) headers['X-Lease-Token'] = lease;
  if (body !== undefined) headers['Content-Type'] = options.type || 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : (options.type ? body : JSON.stringify(body)) });
  if (options.raw) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) {
    // RFC 9457 problem documents: say what failed and what to do.
    const detail = data && data.detail ? data.detail : (data && data.title) || response.statusText;
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return data;
}

// ---- sign-in -------------------------------------------------------------------------------

$('signin').addEventListener('submit', async (event) => {
  event.preventDefault();
  store.setItem('rte-token', $('token').value.trim());
  $('token').value = '';
  await start();
});

$('signout').addEventListener('click', () => {
  store.clear();
  location.reload();
});

// ---- rendering -----------------------------------------------------------------------------

function text(el, value) { el.textContent = value; }

function render() {
  const s = state.status;
  const me = state.me;
  $('signin').hidden = !!me;
  $('who').hidden = !me || !me.authentication;
  if (me) text($('user'), me.user);
  if (s) {
    text($('dut'), s.dut);
    text($('board'), s.board + ' · ' + s.backend);
    text($('power'), s.power);
    text($('power-source'), '(' + s.power_state_source + ')');
    $('led').classList.toggle('on', s.power === 'on');
    document.title = s.dut + ' — rte-agent';
  }
  const lease = state.leases && state.leases.current;
  state.holding = !!(lease && store.getItem('rte-lease') && me && lease.holder === me.user);
  if (lease) {
    const mins = Math.floor(lease.expires_in_s / 60), secs = lease.expires_in_s % 60;
    text($('holder'), 'Held by ' + lease.holder + (lease.purpose ? ' — ' + lease.purpose : '') + ' · ' + mins + ' min ' + secs + ' s left' + (state.holding ? ' (you)' : ''));
  } else {
    text($('holder'), 'Free');
    if (store.getItem('rte-lease')) store.removeItem('rte-lease');
  }
  const queue = $('queue');
  queue.replaceChildren(...((state.leases && state.leases.queue) || []).map((q) => {
    const li = document.createElement('li');
    li.textContent = q.user + (q.purpose ? ' — ' + q.purpose : '') + ' (waiting)';
    return li;
  }));
  document.querySelectorAll('.holder-only button').forEach((b) => { b.disabled = !state.holding; });
  $('reserve-button').disabled = !me || state.holding || state.waiting;
  text($('reserve-button'), lease && !state.holding ? 'Wait in queue' : 'Reserve');
  text($('console-mode'), state.holding ? 'you type here' : 'read-only (reserve the board to type)');
  renderLines();
  renderRuns();
}

function renderLines() {
  const body = $('lines').tBodies[0];
  body.replaceChildren(...state.lines.map((line) => {
    const tr = document.createElement('tr');
    const role = document.createElement('td'); role.textContent = line.role;
    const value = document.createElement('td'); value.textContent = (line.active ? 'active' : 'inactive') + (line.direction === 'input' ? ' (input)' : '');
    const actions = document.createElement('td');
    if (line.direction === 'output') {
      const toggle = document.createElement('button');
      toggle.textContent = line.active ? 'Set inactive' : 'Set active';
      toggle.disabled = !state.holding;
      toggle.dataset.role = line.role;
      toggle.addEventListener('click', () => act(() => api('POST', '/api/v1/lines/' + encodeURIComponent(line.role), { active: !line.active })));
      const press = document.createElement('button');
      press.textContent = 'Press';
      press.disabled = !state.holding;
      press.addEventListener('click', () => act(() => api('POST', '/api/v1/lines/' + encodeURIComponent(line.role), { pulse_ms: 200 })));
      actions.append(toggle, press);
    }
    tr.append(role, value, actions);
    return tr;
  }));
}

function renderRuns() {
  const body = $('runs').tBodies[0];
  body.replaceChildren(...state.runs.slice(0, 20).map((run) => {
    const tr = document.createElement('tr');
    tr.dataset.run = run.id;
    if (run.id === state.selectedRun) tr.classList.add('selected');
    for (const value of [run.id, run.name, run.user, run.state, run.current_stage || '']) {
      const td = document.createElement('td'); td.textContent = value; tr.append(td);
    }
    tr.children[3].className = 'state-' + run.state;
    tr.addEventListener('click', () => { state.selectedRun = run.id; $('transcript').hidden = true; refreshRun(); renderRuns(); });
    return tr;
  }));
}

async function refreshRun() {
  if (!state.selectedRun) return;
  const run = await api('GET', '/api/v1/runs/' + state.selectedRun);
  $('run-detail').hidden = false;
  text($('run-title'), run.id + ' · ' + run.name + ' · ' + run.state);
  $('run-title').className = 'state-' + run.state;
  text($('run-message'), run.message || '');
  // Per-stage timings of the latest iteration as bars scaled to its longest stage.
  const iteration = run.iterations[run.iterations.length - 1];
  const stages = iteration ? iteration.stages : [];
  const longest = Math.max(1, ...stages.map((s) => s.duration_ms));
  $('stages').replaceChildren(...stages.map((s) => {
    const row = document.createElement('div');
    row.className = 'bar' + (s.passed ? '' : ' failed');
    row.dataset.stage = s.name;
    const name = document.createElement('span'); name.textContent = s.name;
    const bar = document.createElement('i'); bar.style.width = (s.duration_ms / longest * 60) + '%';
    const ms = document.createElement('span'); ms.textContent = (s.duration_ms / 1000).toFixed(2) + ' s';
    row.title = s.detail;
    row.append(name, bar, ms);
    return row;
  }));
  // What the boot log proved booted (firmware, iPXE, Xen, kernel, IOMMU), as text only.
  $('facts').replaceChildren(...(iteration && iteration.facts ? iteration.facts : []).flatMap((f) => {
    const dt = document.createElement('dt'); dt.textContent = f.name;
    const dd = document.createElement('dd'); dd.textContent = f.value; dd.dataset.fact = f.name;
    return [dt, dd];
  }));
  $('cancel-run').disabled = !(run.state === 'running' || run.state === 'queued');
}

$('cancel-run').addEventListener('click', () => act(() => api('DELETE', '/api/v1/runs/' + state.selectedRun)));
$('show-transcript').addEventListener('click', async () => {
  const response = await api('GET', '/api/v1/runs/' + state.selectedRun + '/transcript', undefined, { raw: true });
  // Escape sequences removed: the transcript is read, not replayed.
  const raw = new TextDecoder().decode(await response.arrayBuffer());
  $('transcript').textContent = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  $('transcript').hidden = false;
});

// ---- actions -------------------------------------------------------------------------------

async function act(action) {
  try { message(''); await action(); } catch (e) { message(e.message); }
  await refresh();
}

document.querySelectorAll('[data-power]').forEach((b) => b.addEventListener('click', () => act(() => api('POST', '/api/v1/power', { action: b.dataset.power }))));

$('reserve').addEventListener('submit', (event) => {
  event.preventDefault();
  act(async () => {
    const body = { ttl_s: Number($('ttl').value) };
    if ($('purpose').value) body.purpose = $('purpose').value;
    // Held by someone else: wait in the agent's queue (the request returns when the lease is ours).
    const held = state.leases && state.leases.current;
    if (held) { body.wait_s = 3600; message('waiting in the queue behind ' + held.holder + '…'); }
    // One request at a time: a second click while queued would queue this user twice.
    state.waiting = true;
    $('reserve-button').disabled = true;
    try {
      const lease = await api('POST', '/api/v1/leases', body);
      store.setItem('rte-lease', lease.token);
    } finally {
      state.waiting = false;
    }
  });
});
$('renew').addEventListener('click', () => act(() => api('POST', '/api/v1/leases/current/renew', { ttl_s: Number($('ttl').value) })));
$('release').addEventListener('click', () => act(async () => { await api('DELETE', '/api/v1/leases/current'); store.removeItem('rte-lease'); }));

$('spec-list').addEventListener('change', async () => {
  const name = $('spec-list').value;
  if (!name) return;
  const response = await api('GET', '/api/v1/specs/' + encodeURIComponent(name), undefined, { raw: true });
  $('spec').value = await response.text();
});
$('start').addEventListener('submit', (event) => {
  event.preventDefault();
  act(async () => {
    const run = await api('POST', '/api/v1/runs', $('spec').value, { type: 'application/yaml' });
    state.selectedRun = run.id;
  });
});

// ---- console -------------------------------------------------------------------------------

let term = null;
let lastKeyAt = null;
const pending = [];
let sending = false;

function setUpConsole() {
  term = new Terminal({ scrollback: 5000, fontSize: 13, convertEol: false, cursorBlink: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('console'));
  fit.fit();
  window.addEventListener('resize', () => fit.fit());
  window.rteTerm = term;
  // Keys go out in order, one request at a time; what piles up meanwhile goes in the next one.
  term.onData((data) => {
    if (!state.holding) { message('reserve the board to type on its console'); return; }
    pending.push(data);
    if (lastKeyAt === null) lastKeyAt = performance.now();
    sendKeys();
  });
}

async function sendKeys() {
  if (sending) return;
  sending = true;
  while (pending.length) {
    const text = pending.splice(0).join('');
    try { await api('POST', '/api/v1/serial/input', { text }); } catch (e) { message(e.message); }
  }
  sending = false;
}

// The serial stream as server-sent events over fetch (EventSource cannot send the bearer header),
// from the start of the capture so early boot output is there; resumed from the last offset.
async function follow() {
  let from = state.status ? state.status.serial.capture_start : 0;
  for (;;) {
    try {
      const response = await api('GET', '/api/v1/serial/stream?format=sse&from=' + from, undefined, { raw: true });
      if (!response.ok) throw new Error('console stream: ' + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null, event = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) id = line.slice(4);
            else if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (event === 'data') {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            term.write(bytes);
            if (lastKeyAt !== null) { window.rteEcho.push(performance.now() - lastKeyAt); lastKeyAt = null; }
          }
          if (id !== null) from = id;
        }
      }
    } catch (e) {
      message(e.message);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---- refresh -------------------------------------------------------------------------------

async function refresh() {
  try {
    const [status, leases, lines, runs] = await Promise.all([
      api('GET', '/api/v1/status'), api('GET', '/api/v1/leases'), api('GET', '/api/v1/lines'), api('GET', '/api/v1/runs')]);
    state.status = status; state.leases = leases; state.lines = lines; state.runs = runs.runs;
    render();
    if (state.selectedRun) await refreshRun();
  } catch (e) {
    message(e.status === 401 ? 'sign in with your user token' : e.message);
  }
}

async function start() {
  try {
    state.me = await api('GET', '/api/v1/me');
  } catch (e) {
    state.me = null;
    render();
    message(e.status === 401 ? 'sign in with your user token' : e.message);
    return;
  }
  await refresh();
  const specs = await api('GET', '/api/v1/specs');
  $('spec-list').replaceChildren($('spec-list').options[0], ...specs.specs.map((s) => {
    const o = document.createElement('option'); o.value = s.name; o.textContent = s.name; return o;
  }));
  if (!term) { setUpConsole(); follow(); setInterval(refresh, 1000); }
}

start();
