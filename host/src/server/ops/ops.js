// The Relish operations page: sign in with an admin token, show every surface's plan and the
// host's live series, and offer the two emergency actions (roll back, set a canary's weight to 0).
//
// Served under a Content-Security-Policy without inline scripts or styles: every node is built
// with createElement and text (names come from the server and are never parsed as HTML), and
// looks come from classes in ops.css.
'use strict';

const TOKEN_KEY = 'relish-admin-token';
const SERIES_EVERY_MS = 2000;
const SURFACES_EVERY_MS = 5000;
const DEFAULT_WINDOW_MS = 15 * 60 * 1000;
const TICK_EVERY_MS = 5 * 60 * 1000;
const HISTORY_SHOWN = 5;
const PALETTE_SIZE = 8; // --c0 .. --c7 in ops.css

const state = {
  session: 0, // bumped on every sign-in and sign-out: answers and timers of older ones are dropped
  token: null,
  whoami: null,
  surfaces: [],
  surfacesTicket: 0, // the latest /v1/surfaces call: an older answer arriving late is dropped
  points: [],
  intervalMs: SERIES_EVERY_MS,
  windowMs: DEFAULT_WINDOW_MS,
  clockOffsetMs: 0, // client clock minus the host's, from the newest point: plots use the host's
  views: new Map(), // surface name → the parts of its section
  hostPlots: [],
  busy: false, // an action is being sent
  statusSource: null, // the poll whose error #status shows, so that its next success clears it
};

const $ = (selector) => document.querySelector(selector);

/** Builds an element. Children that are strings become text nodes; `data-*` keys become attributes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const td = (text, className = '') => el('td', { className }, text);
const note = (text) => el('p', { className: 'note' }, text);
const table = (headings, rows) => el('table', {},
  el('thead', {}, el('tr', {}, ...headings.map((heading) => el('th', { scope: 'col' }, heading)))),
  el('tbody', {}, ...rows));

/** A number with about three significant digits ('—' for none). */
function fmt(value) {
  if (!Number.isFinite(value)) return '—';
  const size = Math.abs(value);
  if (size >= 100) return value.toFixed(0);
  if (size >= 10) return value.toFixed(1);
  if (size >= 1) return value.toFixed(2);
  return String(Number(value.toPrecision(2)));
}

/** Basis points (what the status and plans hold) as a percentage. */
const percentOfBps = (bps) => `${Number((bps / 100).toFixed(2))} %`;
const share = (value) => (Number.isFinite(value) ? value.toFixed(3) : '—');
const toPercent = (fraction) => (Number.isFinite(fraction) ? fraction * 100 : null);
const localTime = (iso) => (Number.isNaN(Date.parse(iso)) ? String(iso) : new Date(iso).toLocaleString());

// The status line.

function say(text, error = false, source = null) {
  $('#status').textContent = text;
  $('#status').classList.toggle('error', error);
  state.statusSource = source;
}
const complain = (e, prefix = '', source = null) => e.quiet || say(prefix + e.message, true, source);
const recovered = (source) => state.statusSource === source && say('');

// The admin API.

/** A failed call; `quiet` when it was dealt with already (a 401 signs out): nothing to show. */
const apiError = (status, message, quiet = false) => Object.assign(new Error(message), { status, quiet });

/** Calls the admin API with the bearer token; answers the JSON body or throws an apiError. */
async function api(path, method = 'GET', body = undefined) {
  const session = state.session;
  const headers = { authorization: `Bearer ${state.token}` };
  const request = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    request.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, request);
  } catch (e) {
    throw apiError(0, `cannot reach the host (${e.message})`);
  }
  const answer = await response.json().catch(() => null);
  if (session !== state.session) throw apiError(response.status, 'signed out meanwhile', true);
  if (response.status === 401) {
    signOut('token refused: sign in again');
    throw apiError(401, 'token refused', true);
  }
  const error = answer?.error;
  if (!response.ok && typeof error?.message === 'string') {
    // Field errors name the field in `path`; most messages start with it already.
    const named = error.path && !error.message.startsWith(error.path);
    throw apiError(response.status, named ? `${error.path}: ${error.message}` : error.message);
  }
  if (!response.ok || answer === null) {
    throw apiError(response.status, `${method} ${path}: HTTP ${response.status}${response.ok ? ', not JSON' : ''}`);
  }
  return answer;
}

/** Whether the signed-in token may roll back or change the plan of `surface`. */
function mayChange(surface) {
  const who = state.whoami;
  return who?.role === 'deploy' && (who.surfaces == null || who.surfaces.includes(surface));
}

// Signing in and out.

function showSignedIn(signedIn) {
  $('#sign-in-box').hidden = signedIn;
  for (const id of ['#ops', '#sign-out', '#whoami']) $(id).hidden = !signedIn;
}

function signIn() {
  const typed = $('#token').value.trim();
  if (!typed) return say('Type the admin token first.');
  $('#token').value = '';
  sessionStorage.setItem(TOKEN_KEY, typed);
  begin(typed);
}

async function begin(token) {
  const session = ++state.session;
  state.token = token;
  say('Signing in…');
  let who;
  try {
    who = await api('/v1/whoami');
  } catch (e) {
    if (e.quiet) return; // a 401 signed out already, saying so
    if (e.status === 0 || e.status >= 500) {
      // The host may be restarting: keep the token and try again.
      complain(e, 'Cannot sign in yet (trying again in 5 s): ');
      setTimeout(() => session === state.session && begin(token), SURFACES_EVERY_MS);
    } else {
      signOut(`Cannot sign in: ${e.message}`);
    }
    return;
  }
  state.whoami = who;
  const scope = who.surfaces == null ? 'every surface' : `surfaces: ${who.surfaces.join(', ') || 'none'}`;
  $('#whoami').textContent = `Signed in as ${who.name} (role ${who.role}; ${scope})`;
  showSignedIn(true);
  say('');
  repeat(session, SURFACES_EVERY_MS, refreshSurfaces);
  repeat(session, SERIES_EVERY_MS, refreshSeries);
}

function signOut(message) {
  state.session++;
  Object.assign(state, { token: null, whoami: null, surfaces: [], points: [], busy: false });
  sessionStorage.removeItem(TOKEN_KEY);
  finishConfirm(null);
  for (const view of state.views.values()) view.section.remove();
  state.views.clear();
  $('#policies').replaceChildren();
  $('#whoami').textContent = '';
  showSignedIn(false);
  say(message);
  drawAll();
  $('#token').focus();
}

/** Runs `work` now and again `everyMs` after each run ends, while `session` lasts. */
function repeat(session, everyMs, work) {
  const tick = async () => {
    if (session !== state.session) return;
    await work();
    if (session === state.session) setTimeout(tick, everyMs);
  };
  tick();
}

// Polls.

async function refreshSurfaces() {
  if (!state.token) return;
  const ticket = ++state.surfacesTicket;
  try {
    const [surfaces, policies] = await Promise.all([api('/v1/surfaces'), api('/v1/policies')]);
    if (ticket !== state.surfacesTicket) return;
    state.surfaces = surfaces.surfaces || [];
    renderSurfaces(state.surfaces);
    renderPolicies(policies.policies || {});
    drawAll();
    recovered('surfaces');
  } catch (e) {
    complain(e, 'Cannot refresh the surfaces: ', 'surfaces');
  }
}

async function refreshSeries() {
  const newest = state.points[state.points.length - 1];
  try {
    // The first call takes the whole window, later ones only what came after the newest point.
    const answer = await api(newest ? `/v1/ops/series?after=${newest.at}` : '/v1/ops/series');
    state.intervalMs = answer.interval_ms || SERIES_EVERY_MS;
    state.windowMs = answer.window_ms || DEFAULT_WINDOW_MS;
    for (const point of answer.points || []) {
      const last = state.points[state.points.length - 1];
      if (!last || point.at > last.at) state.points.push(point);
    }
    const last = state.points[state.points.length - 1];
    if (last && last !== newest) state.clockOffsetMs = Date.now() - last.at;
    const keepFrom = state.points.findIndex((point) => point.at >= seriesNow() - state.windowMs);
    state.points.splice(0, keepFrom === -1 ? state.points.length : keepFrom);
    recovered('series');
  } catch (e) {
    complain(e, 'Cannot refresh the live series: ', 'series');
  }
  // Drawn even after a failure: the plots move on with the clock, so a stalled series shows.
  drawAll();
}

/** The plots' right edge: the host's clock, as estimated from its newest point. */
const seriesNow = () => Date.now() - state.clockOffsetMs;

// Surfaces.

function renderSurfaces(list) {
  const container = $('#surfaces');
  const wanted = new Set(list.map((status) => status.surface));
  for (const [name, view] of state.views) {
    if (!wanted.has(name)) {
      view.section.remove();
      state.views.delete(name);
    }
  }
  list.forEach((status, index) => {
    if (!state.views.has(status.surface)) state.views.set(status.surface, surfaceView(status.surface));
    const view = state.views.get(status.surface);
    renderSurface(view, status);
    // Sections (and their canvases) stay from one poll to the next: they are only moved.
    const here = container.children[index];
    if (here !== view.section) container.insertBefore(view.section, here || null);
  });
  $('#no-surfaces').hidden = list.length > 0;
}

function surfaceView(name) {
  const view = {
    revision: el('span', { className: 'revision' }),
    facts: el('dl', { className: 'facts' }),
    arms: el('div', { className: 'arms' }),
    shadows: el('div', { className: 'shadows' }),
    history: el('div', { className: 'history' }),
    plots: Object.keys(SURFACE_PLOTS).map((series) => makePlot(SURFACE_PLOTS[series], series, name)),
    healthCells: new Map(),
    keys: {}, // what each part was last built from
    status: null,
  };
  // Permissions hold for a session, and every session makes its views anew.
  const rollbackButton = mayChange(name)
    ? el('button', { type: 'button', className: 'rollback danger', onclick: () => rollback(view.status) }, 'Roll back…')
    : null;
  view.section = el('section', { className: 'surface', 'data-surface': name },
    el('header', {}, el('h3', {}, name), el('span', { className: 'rev' }, 'revision ', view.revision), rollbackButton),
    view.facts,
    el('h4', {}, 'Arms'), view.arms,
    el('h4', {}, 'Shadows'), view.shadows,
    el('h4', {}, `Last ${HISTORY_SHOWN} plan revisions`), view.history,
    el('div', { className: 'plots' }, ...view.plots.map((plot) => plot.figure)));
  return view;
}

/** Rebuilds a part only when what it shows changed, so that buttons stay put under the pointer. */
function whenChanged(view, part, shown, build) {
  const key = JSON.stringify(shown);
  if (view.keys[part] !== key) {
    view.keys[part] = key;
    build();
  }
}

function renderSurface(view, status) {
  view.status = status;
  const mayAct = mayChange(status.surface);
  view.revision.textContent = String(status.revision);
  view.facts.replaceChildren(...facts(status));
  // Health counts change with every call: they are updated in place, not part of the key.
  const arms = status.arms.map(({ health, ...arm }) => arm);
  whenChanged(view, 'arms', [mayAct, status.revision, arms],
    () => view.arms.replaceChildren(armsTable(view, status, mayAct)));
  for (const arm of status.arms) {
    const cell = view.healthCells.get(arm.name);
    cell.textContent = healthText(arm.health);
    cell.classList.toggle('bad', Boolean(arm.health?.tripped));
  }
  whenChanged(view, 'shadows', status.shadows, () => view.shadows.replaceChildren(shadowsTable(status)));
  const recent = status.history.slice(-HISTORY_SHOWN).reverse();
  whenChanged(view, 'history', recent, () => view.history.replaceChildren(historyTable(recent)));
}

function facts(status) {
  const limits = status.limits;
  return [
    ['Serving', status.serving || 'no plan'],
    ['Salt', status.current ? status.current.plan.salt || '(empty)' : '—'],
    ['Fallback', status.fallback || 'none'],
    ['Limits', limits
      ? `${fmt(limits.deadline_ms)} ms deadline · ${fmt(limits.memory_mb)} MiB · ${limits.max_candidates} candidates · `
        + `${limits.max_concurrency ?? 'unlimited'} calls in flight · ${limits.shadow_concurrency} shadow calls`
      : '—'],
  ].flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]);
}

function healthText(health) {
  if (!health) return 'not watched'; // automatic rollback off, or an arm without weight
  const text = `${health.failures} of ${health.calls} calls failed `
    + `(rolls back at ${fmt(health.threshold * 100)} % of ${health.window}, from ${health.min_calls} calls)`;
  return health.tripped ? `TRIPPED: ${text}` : text;
}

/** The arm with the largest weight (the first of equals: the control arm wins a tie). */
const largestArm = (arms) => arms.reduce((best, arm) => (arm.weight > best.weight ? arm : best));

/** Arms offered a zero-weight button: every weighted arm but the largest, in a plan with 2+. */
function zeroableArms(plan) {
  const weighted = plan ? plan.arms.filter((arm) => arm.weight > 0) : [];
  if (weighted.length < 2) return new Set();
  const largest = largestArm(weighted);
  return new Set(weighted.filter((arm) => arm !== largest).map((arm) => arm.name));
}

function armsTable(view, status, mayAct) {
  view.healthCells = new Map(status.arms.map((arm) => [arm.name, td('')]));
  if (!status.arms.length) return note('No arm serves this surface.');
  const zeroable = mayAct ? zeroableArms(status.current?.plan) : new Set();
  const rows = status.arms.map((arm) => el('tr', { className: 'arm', 'data-arm': arm.name },
    td(arm.name, 'name'), td(`${arm.policy}@${arm.version}`), td(percentOfBps(arm.weight), 'weight'),
    view.healthCells.get(arm.name),
    td(zeroable.has(arm.name) ? el('button', {
      type: 'button', className: 'zero-weight danger', 'data-arm': arm.name, onclick: () => zeroWeight(status, arm.name),
    }, 'Set weight to 0…') : '')));
  return table(['Arm', 'Version', 'Weight', 'Health (automatic rollback)', ''], rows);
}

function shadowsTable(status) {
  if (!status.shadows.length) return note('No shadows.');
  const rows = status.shadows.flatMap((shadow) => {
    const own = () => [td(shadow.name, 'name'), td(`${shadow.policy}@${shadow.version}`),
      td(`${fmt(shadow.sample * 100)} %`), td(String(shadow.skipped))];
    const row = (...cells) => el('tr', { className: 'shadow', 'data-shadow': shadow.name }, ...cells);
    if (!shadow.against.length) return [row(...own(), el('td', { colSpan: 8, className: 'note' }, 'no calls yet'))];
    // One row per arm it was compared with; the shadow's own columns only on the first.
    return shadow.against.map((figures, index) => row(...(index === 0 ? own() : own().map(() => td(''))),
      td(figures.arm), td(String(figures.calls)),
      td(Object.entries(figures.failures).map(([reason, count]) => `${reason} ${count}`).join(', ') || '0'),
      td(share(figures.top1_agreement)), td(share(figures.overlap)), td(share(figures.rbo)),
      td(share(figures.kendall_tau)), td(fmt(figures.mean_ms))));
  });
  return table(['Shadow', 'Version', 'Sample', 'Skipped', 'Against arm', 'Calls', 'Failures',
    'Top-1', 'Overlap', 'RBO', 'Kendall τ', 'Mean ms'], rows);
}

function ending(ended) {
  switch (ended?.how) {
    case undefined: return 'serving';
    case 'superseded': return 'superseded';
    case 'rolled-back': return `rolled back by ${ended.actor}${ended.automatic ? ' (automatic)' : ''}: ${ended.reason}`;
    case 'repaired': return `repaired: ${ended.reason}`;
    default: return String(ended.how);
  }
}

function historyTable(recent) {
  if (!recent.length) return note('No plan yet.');
  const rows = recent.map((revision) => {
    const plan = [...revision.plan.arms.map((arm) => `${arm.name} ${percentOfBps(arm.weight)}`),
      ...(revision.plan.shadows || []).map((shadow) => `shadow ${shadow.name}`)].join(', ');
    const reason = [revision.reason, revision.restores && `restores revision ${revision.restores}`]
      .filter(Boolean).join('; ');
    const failed = revision.failed ? `; FAILED (arm ${revision.failed.arm}: ${revision.failed.reason})` : '';
    return el('tr', {}, td(String(revision.revision)), el('td', { title: revision.at }, localTime(revision.at)),
      td(revision.actor), td(plan), td(reason), td(ending(revision.ended) + failed, revision.failed ? 'bad' : ''));
  });
  return table(['Revision', 'At', 'By', 'Plan', 'Reason', 'Ended'], rows);
}

function renderPolicies(policies) {
  const serving = new Set(state.surfaces.flatMap((status) => [...status.arms, ...status.shadows])
    .map((used) => `${used.policy}@${used.version}`));
  const items = Object.entries(policies).map(([name, versions]) => el('li', {}, el('b', {}, name), ' ',
    ...versions.map((entry) => {
      // docs/operations.md says a list of versions, admin.rs answers version records: take either.
      const version = typeof entry === 'string' ? entry : entry.version;
      return el('span', { className: serving.has(`${name}@${version}`) ? 'version serving' : 'version' }, version);
    })));
  $('#policies').replaceChildren(...(items.length ? items : [el('li', { className: 'note' }, 'No versions stored.')]));
}

// Actions, through one confirmation dialog.

let settleConfirm = null;

/** Asks in the dialog; answers the reason typed (or the default), or null when cancelled. */
function askConfirm(text, defaultReason) {
  $('#confirm-text').textContent = text;
  $('#confirm-reason').value = defaultReason;
  $('#confirm').showModal();
  $('#confirm-reason').select();
  return new Promise((resolve) => {
    settleConfirm = (reason) => resolve(reason === null ? null : reason.trim() || defaultReason);
  });
}

function finishConfirm(reason) {
  const settle = settleConfirm;
  settleConfirm = null;
  if ($('#confirm').open) $('#confirm').close();
  settle?.(reason);
}

async function act(surface, text, defaultReason, send, describe) {
  if (state.busy) return;
  const reason = await askConfirm(text, defaultReason);
  if (reason === null) return;
  const session = state.session;
  state.busy = true;
  say(`${surface}: sending…`);
  try {
    say(describe(await send(reason)));
  } catch (e) {
    // 409: nothing to roll back to, or the plan changed meanwhile; the refresh shows what is now.
    complain(e, `${surface}: not done: `);
  } finally {
    state.busy = false;
    if (session === state.session) refreshSurfaces();
  }
}

const surfacePath = (surface, tail) => `/v1/surfaces/${encodeURIComponent(surface)}/${tail}`;

function rollback(status) {
  const surface = status.surface;
  act(surface, `Roll back ${surface} from revision ${status.revision} to the previous plan?`,
    'rolled back from the ops page',
    (reason) => api(surfacePath(surface, 'rollback'), 'POST', { reason }),
    (answer) => `Rolled back ${surface}: revision ${answer.revision} serves now`
      + (answer.restores ? ` (the plan of revision ${answer.restores}).` : '.'));
}

/** Sends the current plan with `armName` at 0 and its weight given to the largest arm: same
 * names (so every other arm keeps its users), parameters, salt and shadows, in basis points,
 * refused (409) if the surface moved past the revision shown. */
function zeroWeight(status, armName) {
  const surface = status.surface;
  const plan = status.current.plan;
  const canary = plan.arms.find((arm) => arm.name === armName);
  const largest = largestArm(plan.arms.filter((arm) => arm.weight > 0));
  const weightOf = (arm) => (arm === canary ? 0 : arm === largest ? arm.weight + canary.weight : arm.weight);
  const body = (reason) => ({
    arms: plan.arms.map((arm) => ({
      name: arm.name, policy: arm.policy, version: arm.version, weight: weightOf(arm), params: arm.params || {},
    })),
    salt: plan.salt,
    shadow: (plan.shadows || []).map((shadow) => ({
      name: shadow.name, policy: shadow.policy, version: shadow.version, sample: shadow.sample,
      params: shadow.params || {},
    })),
    expected_revision: status.revision,
    reason,
  });
  act(surface,
    `Set arm ${armName} of ${surface} to 0 %? Its ${percentOfBps(canary.weight)} goes to ${largest.name} `
      + `(${percentOfBps(largest.weight)} → ${percentOfBps(largest.weight + canary.weight)}). `
      + `Refused if the plan changed after revision ${status.revision}.`,
    `set ${armName} to weight 0 from the ops page`,
    (reason) => api(surfacePath(surface, 'plan'), 'PUT', body(reason)),
    (answer) => (answer.changed
      ? `${surface}: revision ${answer.revision} serves now, with ${armName} at 0 %.`
      : `${surface}: nothing changed (the plan was already so).`));
}

// Plots. A line is {label, values (one per point, null for none), unit?, details?(index)}.

function line(label, points, read, extra = {}) {
  const values = points.map((point) => { const v = read(point); return Number.isFinite(v) ? v : null; });
  return { label, values, ...extra };
}

/** Lines for each thing `pick` finds in a point (arms, shadows, stores): `known` ones first, in
 * their order, then any others the window holds (an arm since removed). */
function linesOf(points, known, pick, makeLines) {
  const names = [...known];
  for (const point of points) {
    for (const name of Object.keys(pick(point) || {})) if (!names.includes(name)) names.push(name);
  }
  return names.flatMap((name) => makeLines(name, (point) => pick(point)?.[name]));
}

const armLines = (points, status, makeLines) => linesOf(points, status.arms.map((arm) => arm.name),
  (point) => point.surfaces?.[status.surface]?.arms, makeLines);

const SURFACE_PLOTS = {
  rps: {
    caption: 'Requests per second, by arm', unit: 'req/s', empty: 'No requests in the window.',
    lines: (points, status) => armLines(points, status, (name, arm) => [
      line(name, points, (p) => arm(p)?.requests_per_second)]),
  },
  latency: {
    caption: 'Latency p50 and p99, by arm', unit: 'ms', empty: 'No calls in the window.',
    lines: (points, status) => armLines(points, status, (name, arm) => [
      line(`${name} p50`, points, (p) => arm(p)?.p50_ms),
      line(`${name} p99`, points, (p) => arm(p)?.p99_ms)]),
  },
  fallbacks: {
    caption: 'Fallback rate, by arm (all reasons)', unit: '%', empty: 'No requests in the window.',
    lines: (points, status) => armLines(points, status, (name, arm) => {
      const rates = (p) => (arm(p) ? arm(p).fallback_rate || {} : null);
      return [line(name, points, (p) => rates(p) && toPercent(Object.values(rates(p)).reduce((a, b) => a + b, 0)), {
        details: (i) => Object.entries(rates(points[i]) || {}).filter(([, rate]) => rate > 0)
          .map(([reason, rate]) => `${reason} ${fmt(rate * 100)} %`).join(', '),
      })];
    }),
  },
  agreement: {
    caption: 'Shadow agreement with the answer sent', unit: '1 = the same', top: 1,
    empty: 'No shadow calls in the window.',
    lines: (points, status) => linesOf(points, status.shadows.map((shadow) => shadow.name),
      (point) => point.surfaces?.[status.surface]?.shadows, (name, shadow) => {
        const details = (i) => (shadow(points[i]) ? `${fmt(shadow(points[i]).calls_per_second)} calls/s` : '');
        return [line(`${name} top-1`, points, (p) => shadow(p)?.top1, { details, unit: '' }),
          line(`${name} RBO`, points, (p) => shadow(p)?.rbo, { details, unit: '' })];
      }),
  },
};

const HOST_PLOTS = {
  features: {
    caption: 'Feature store hit rate', unit: '%', top: 100, empty: 'No feature store: nothing to draw.',
    lines: (points) => linesOf(points, [], (point) => point.stores, (name, store) => [
      line(name, points, (p) => toPercent(store(p)?.hit_rate), {
        details: (i) => (store(points[i]) ? `${fmt(store(points[i]).lookups_per_second)} lookups/s` : ''),
      })]),
  },
  fleet: {
    caption: 'Fleet: replication lag and revisions behind', unit: 'ms · revisions',
    empty: 'This host stands alone (no fleet): nothing to draw.',
    lines: (points) => (points.some((point) => point.fleet) ? [
      line('lag', points, (p) => p.fleet?.lag_ms, { unit: 'ms' }),
      line('behind', points, (p) => p.fleet?.behind, { unit: 'revisions' })] : []),
  },
};

function makePlot(def, series, surface = null) {
  const canvas = el('canvas', { className: 'plot', 'data-series': series, 'data-points': '0', 'data-last': '' });
  if (surface !== null) canvas.setAttribute('data-surface', surface);
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', def.caption);
  const plot = {
    def, canvas, lines: [],
    empty: el('p', { className: 'note empty', hidden: true }, def.empty),
    legend: el('ul', { className: 'legend' }),
  };
  plot.figure = el('figure', { className: 'plot-box' },
    el('figcaption', {}, `${def.caption} (${def.unit})`), canvas, plot.empty, plot.legend);
  return plot;
}

function drawAll() {
  for (const view of state.views.values()) {
    for (const plot of view.plots) update(plot, plot.def.lines(state.points, view.status));
  }
  for (const plot of state.hostPlots) update(plot, plot.def.lines(state.points));
}

/** Sets the lines and what the tests read (`data-points`, `data-last`), then paints. */
function update(plot, lines) {
  plot.lines = lines;
  const drawn = Math.max(0, ...lines.map((l) => l.values.filter((v) => v !== null).length));
  const last = lines.length ? lines[0].values.filter((v) => v !== null).pop() : undefined;
  plot.canvas.dataset.points = String(drawn);
  plot.canvas.dataset.last = last === undefined ? '' : String(last);
  plot.empty.hidden = drawn > 0;
  paint(plot);
}

/** A step of 1, 2 or 5 times a power of ten, at least `raw`. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const mantissa = raw / power;
  return (mantissa <= 1 ? 1 : mantissa <= 2 ? 2 : mantissa <= 5 ? 5 : 10) * power;
}

/** Runs of [at, value] to join: broken at nulls and where points are missing (a restart). */
function segments(values, at, maxGapMs) {
  const runs = [];
  let run = null;
  values.forEach((value, i) => {
    if (value === null) {
      run = null;
    } else {
      if (!run || at[i] - at[i - 1] > maxGapMs) runs.push(run = []);
      run.push([at[i], value]);
    }
  });
  return runs;
}

function paint(plot) {
  const { canvas, lines } = plot;
  const [width, height] = [canvas.clientWidth, canvas.clientHeight];
  if (!width || !height) return; // not laid out (signed out)
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  // Colours come from ops.css (--c0.., --ink, --grid), where the legend's swatches get them too.
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(`--${name}`).trim();
  const rule = (x0, y0, x1, y1) => { ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke(); };

  const box = { left: 46, right: width - 10, top: 18, bottom: height - 20 };
  const [windowMs, now] = [state.windowMs, seriesNow()];
  const start = now - windowMs;
  const at = state.points.map((point) => point.at);
  const x = (t) => box.left + ((t - start) / windowMs) * (box.right - box.left);
  const highest = Math.max(0, ...lines.flatMap((l) => l.values.filter((v) => v !== null)));
  const step = niceStep((plot.def.top || highest * 1.1 || 1) / 5);
  const top = plot.def.top || Math.ceil((highest * 1.1 || 1) / step) * step;
  const y = (v) => box.bottom - (v / top) * (box.bottom - box.top);

  // Axes: y from 0 with a few ticks, x in minutes before now; the unit top left.
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.strokeStyle = colour('grid');
  ctx.fillStyle = colour('ink');
  [ctx.textAlign, ctx.textBaseline] = ['right', 'middle'];
  for (let v = 0; v <= top + step / 1000; v += step) {
    const py = Math.round(y(v)) + 0.5;
    rule(box.left, py, box.right, py);
    ctx.fillText(String(Number(v.toPrecision(4))), box.left - 5, py);
  }
  [ctx.textAlign, ctx.textBaseline] = ['center', 'top'];
  for (let ago = Math.floor(windowMs / TICK_EVERY_MS) * TICK_EVERY_MS; ago >= 0; ago -= TICK_EVERY_MS) {
    const px = Math.round(x(now - ago)) + 0.5;
    rule(px, box.top, px, box.bottom + 3);
    ctx.fillText(ago ? `-${ago / 60000}m` : 'now', px, box.bottom + 5);
  }
  [ctx.textAlign, ctx.textBaseline] = ['left', 'alphabetic'];
  ctx.fillText(plot.def.unit, 4, 11);

  // Lines, clipped to the plot area (a share above its fixed top stays inside).
  ctx.save();
  ctx.beginPath();
  ctx.rect(box.left, box.top - 1, box.right - box.left, box.bottom - box.top + 2);
  ctx.clip();
  [ctx.lineWidth, ctx.lineJoin] = [1.75, 'round'];
  lines.forEach((l, index) => {
    ctx.strokeStyle = ctx.fillStyle = colour(`c${index % PALETTE_SIZE}`);
    for (const run of segments(l.values, at, state.intervalMs * 2.5)) {
      ctx.beginPath();
      run.forEach(([t, v], k) => (k ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      if (run.length > 1) {
        ctx.stroke();
      } else { // a lone point between gaps would not show as a line
        ctx.arc(x(run[0][0]), y(run[0][1]), 2, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  });
  ctx.restore();
  renderLegend(plot);
}

/** The legend: each line's colour, label and value at the newest point ('—': none there). */
function renderLegend(plot) {
  const index = state.points.length - 1;
  if (!plot.lines.length || index < 0) return plot.legend.replaceChildren();
  const when = `at ${new Date(state.points[index].at).toLocaleTimeString()}`;
  plot.legend.replaceChildren(el('li', { className: 'when' }, when), ...plot.lines.map((l, i) => {
    const value = l.values[index];
    const details = value !== null && l.details ? l.details(index) : '';
    return el('li', {}, el('span', { className: `swatch c${i % PALETTE_SIZE}` }), `${l.label} `,
      el('b', {}, value === null ? '—' : `${fmt(value)} ${l.unit ?? plot.def.unit}`.trim()),
      details ? ` (${details})` : null);
  }));
}

// Start.

function start() {
  $('#sign-in').addEventListener('click', signIn);
  $('#token').addEventListener('keydown', (event) => event.key === 'Enter' && signIn());
  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  const confirmed = () => finishConfirm($('#confirm-reason').value);
  $('#confirm-yes').addEventListener('click', confirmed);
  $('#confirm-reason').addEventListener('keydown', (event) => event.key === 'Enter' && confirmed());
  $('#confirm-no').addEventListener('click', () => finishConfirm(null));
  $('#confirm').addEventListener('close', () => finishConfirm(null)); // Escape, too
  state.hostPlots = Object.keys(HOST_PLOTS).map((series) => makePlot(HOST_PLOTS[series], series));
  $('#host-plots').append(...state.hostPlots.map((plot) => plot.figure));
  window.addEventListener('resize', drawAll); // the canvases follow their CSS size
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) begin(token);
  else $('#token').focus();
}

start();
