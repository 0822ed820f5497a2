// The night round: tonight's planned supervision checks of one site, live.
//
// The list is the API's (/api/v1/night-round): fetched on load, again whenever a supervision
// alert of the site changes on the alert stream (SSE), and every minute, because a check turns
// due and then missed with the clock alone. No framework and no build step. Every text comes
// from strings.json (embedded in #night-config); every value from the server goes into the page
// through textContent, never innerHTML.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("night-config").textContent);
  const STRINGS = config.strings;
  const LANG_KEY = "carewatch.lang"; // shared with the board: one choice for every page
  const FALLBACK_ZONE = "Europe/Stockholm";
  const SUPERVISION_RULES = new Set(config.supervision_rules);
  // States that need someone to act; a row turning into one is announced.
  const ATTENTION = new Set(["missed", "retry_due", "visit_needed"]);
  // A physical visit settles these (devices/supervision.py: a visit from the window's start on).
  const VISIT_SETTLES = new Set(["visit_needed", "missed", "retry_due"]);
  // Where the page offers to record one: a visit is needed, or nobody looked in time. A check
  // not seen once is looked at again through the camera first.
  const VISIT_OFFERED = new Set(["visit_needed", "missed"]);
  const RELOAD_DEBOUNCE_MS = 250; // one refetch for the burst of changes one pass writes
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const HEADERS = { "Content-Type": "application/json", "X-Requested-With": "carewatch" };

  const els = {
    list: document.getElementById("checks"),
    empty: document.getElementById("empty"),
    summary: document.getElementById("summary"),
    truncated: document.getElementById("truncated"),
    nightDate: document.getElementById("night-date"),
    heading: document.getElementById("site-heading"),
    banner: document.getElementById("connection-banner"),
    announcer: document.getElementById("announcer"),
    language: document.getElementById("language-toggle"),
  };

  let lang = pickLanguage();
  let site = null; // the NightRoundSite last fetched
  let truncated = false; // the API answered only the first 500 residences
  let source = null;
  let connectionLost = false;
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer = null;
  let reloadTimer = null;
  let loading = null; // the fetch under way; a change meanwhile asks for one more
  let reloadAgain = false;
  // Visits recorded here that the next supervision pass has not yet settled: key -> time.
  const pending = new Map();

  // --- texts ---------------------------------------------------------------------------------

  function pickLanguage() {
    const asked = new URLSearchParams(window.location.search).get("lang");
    if (asked && STRINGS[asked]) return asked;
    let stored = null;
    try {
      stored = window.localStorage.getItem(LANG_KEY);
    } catch (_) {
      stored = null; // storage may be disabled; the user's language then decides
    }
    if (stored && STRINGS[stored]) return stored;
    return STRINGS[config.lang] ? config.lang : "sv";
  }

  function t(key, values) {
    const text = STRINGS[lang][key] ?? STRINGS.sv[key] ?? key;
    return values ? text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? "")) : text;
  }

  function locale() {
    return lang === "sv" ? "sv-SE" : "en-GB";
  }

  const formatters = new Map();
  function formatter(options, zone) {
    const key = `${locale()}|${zone}|${JSON.stringify(options)}`;
    if (!formatters.has(key)) {
      let made;
      try {
        made = new Intl.DateTimeFormat(locale(), { ...options, timeZone: zone });
      } catch (_) {
        made = new Intl.DateTimeFormat(locale(), { ...options, timeZone: FALLBACK_ZONE });
      }
      formatters.set(key, made);
    }
    return formatters.get(key);
  }

  // A time of the night in the site's own zone: the clock the plan's times are on.
  function siteTime(iso) {
    if (!iso) return "";
    const zone = site ? site.timezone : FALLBACK_ZONE;
    return formatter({ hour: "2-digit", minute: "2-digit" }, zone).format(new Date(iso));
  }

  function nightName(night) {
    // The night is named by its evening; show both dates ("lör 5 dec – sön 6 dec").
    const evening = new Date(`${night}T12:00:00Z`);
    const morning = new Date(evening.getTime() + 86400000);
    const f = formatter({ weekday: "short", day: "numeric", month: "short" }, "UTC");
    return t("night_date", { evening: f.format(evening), morning: f.format(morning) });
  }

  function formatDuration(seconds) {
    const whole = Math.round(seconds);
    if (whole < 60) return t("night_duration_s", { s: whole });
    return t("night_duration_min_s", { m: Math.floor(whole / 60), s: whole % 60 });
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.title = `${t("night_title")} – ${t("app_name")}`;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n, { user: el.dataset.user ?? "" });
    }
    for (const el of document.querySelectorAll("[data-i18n-aria]")) {
      el.setAttribute("aria-label", t(el.dataset.i18nAria));
    }
    if (els.language) els.language.lang = lang === "sv" ? "en" : "sv";
    if (connectionLost) els.banner.textContent = t("connection_lost");
    render();
  }

  // --- rows ----------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function keyOf(check) {
    return `${check.residence_id}-${new Date(check.planned_at).getTime()}`;
  }

  function buildRow(check) {
    const key = keyOf(check);
    const row = el("li", "check");
    row.dataset.key = key;
    row.dataset.residence = String(check.residence_id);
    row.dataset.planned = check.planned_at;
    const article = el("article");
    const titleId = `check-${key}-title`;
    const stateId = `check-${key}-state`;
    // The row is named by its heading and its state.
    article.setAttribute("aria-labelledby", `${titleId} ${stateId}`);

    const head = el("div", "check-head");
    const planned = el("time", "planned");
    const title = el("h3", "residence");
    title.id = titleId;
    // The heading says the time, too: a screen reader's list of headings is the night in order.
    title.append(el("span", "visually-hidden time-words"), el("span", "label"));
    const badge = el("span", "badge");
    badge.id = stateId;
    head.append(planned, title, badge);
    const detail = el("p", "detail");
    const flags = el("p", "flags");

    const form = el("form", "visit");
    form.noValidate = true;
    const noteId = `check-${key}-note`;
    const noteLabel = el("label", "note-label");
    noteLabel.htmlFor = noteId;
    const note = el("input", "note");
    note.id = noteId;
    note.name = "note";
    note.maxLength = 500;
    note.autocomplete = "off";
    const record = el("button", "record primary");
    record.type = "submit";
    record.setAttribute("aria-describedby", titleId); // which of the night's buttons it is
    const error = el("p", "action-error");
    error.setAttribute("role", "alert");
    form.append(noteLabel, note, record, error);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      recordVisit(row);
    });
    const recorded = el("p", "recorded");

    article.append(head, detail, flags, form, recorded);
    row.append(article);
    return row;
  }

  function describe(check) {
    switch (check.state) {
      case "done":
      case "late": {
        const prefix = check.state === "done" ? "night_detail_seen" : "night_detail_late";
        const time = siteTime(check.seen_at);
        if (check.duration_s == null) return t(`${prefix}_at`, { time });
        return t(prefix, { time, duration: formatDuration(check.duration_s) });
      }
      case "retry_due":
        // The API may not say when (retry_at): then only that a retry is due.
        return check.retry_at
          ? t("night_detail_retry_at", { time: siteTime(check.retry_at) })
          : t("night_detail_retry");
      case "missed":
        return t("night_detail_missed", { end: siteTime(check.window_end) });
      case "visit_needed":
        return check.camera_failed ? t("night_detail_camera_failed") : t("night_detail_not_seen");
      case "visited": {
        const key = check.camera_failed ? "night_detail_visited_camera" : "night_detail_visited";
        return check.visited_at
          ? t(`${key}_at`, { time: siteTime(check.visited_at) })
          : t(key);
      }
      case "paused":
        return t("night_detail_paused");
      case "due":
        return t("night_detail_due", { end: siteTime(check.window_end) });
      case "upcoming":
        return t("night_detail_upcoming", {
          start: siteTime(check.window_start),
          end: siteTime(check.window_end),
        });
      default:
        return "";
    }
  }

  function fillRow(row, check) {
    const q = (selector) => row.querySelector(selector);
    const key = row.dataset.key;
    const visitAt = pending.get(key);
    row.className = `check state-${check.state}${visitAt ? " pending" : ""}`;
    row.dataset.state = check.state;
    const planned = q(".planned");
    planned.dateTime = check.planned_at;
    planned.textContent = check.planned_local;
    const state = t(`night_state_${check.state}`);
    q(".time-words").textContent = `${check.planned_local}, `;
    q(".label").textContent = check.residence_label;
    q(".badge").textContent = state;
    q(".detail").textContent = describe(check);

    const flags = q(".flags");
    flags.replaceChildren();
    if (check.camera_failed) flags.append(el("span", "tag tag-camera", t("night_flag_camera")));
    if (check.not_seen && check.state !== "retry_due" && check.state !== "visit_needed") {
      flags.append(el("span", "tag tag-not-seen", t("night_flag_not_seen")));
    }
    if (check.by_visit && check.state !== "visited") {
      flags.append(el("span", "tag", t("night_flag_by_visit")));
    }
    flags.hidden = flags.childElementCount === 0;

    const form = q("form.visit");
    form.hidden = !(config.can_act && VISIT_OFFERED.has(check.state) && !visitAt);
    q(".note-label").textContent = t("night_note_label");
    q("button.record").textContent = t("night_record_visit");
    const recorded = q(".recorded");
    recorded.textContent = visitAt ? t("night_visit_recorded", { time: siteTime(visitAt) }) : "";
    recorded.hidden = !visitAt;
  }

  function rowFor(key) {
    return els.list.querySelector(`li.check[data-key="${CSS.escape(key)}"]`);
  }

  function render() {
    if (!els.list) return;
    if (!site) return;
    els.nightDate.textContent = nightName(site.night);
    els.heading.textContent = site.site_name;
    const wanted = new Set(site.checks.map(keyOf));
    for (const row of [...els.list.children]) {
      if (!wanted.has(row.dataset.key)) row.remove();
    }
    let previous = null;
    for (const check of site.checks) {
      const key = keyOf(check);
      let row = rowFor(key);
      if (!row) row = buildRow(check);
      fillRow(row, check);
      // Move a row only when it is out of place: moving the focused one would lose the focus.
      const expected = previous ? previous.nextElementSibling : els.list.firstElementChild;
      if (row !== expected) {
        if (previous) previous.after(row);
        else els.list.prepend(row);
      }
      previous = row;
    }
    renderSummary();
  }

  function renderSummary() {
    const counts = {};
    for (const check of site.checks) counts[check.state] = (counts[check.state] ?? 0) + 1;
    const n = site.checks.length;
    const parts = [n === 1 ? t("night_summary_one") : t("night_summary_many", { n })];
    for (const state of ["visit_needed", "missed", "retry_due", "due"]) {
      if (counts[state]) parts.push(t(`night_summary_${state}`, { n: counts[state] }));
    }
    els.summary.removeAttribute("data-i18n"); // from now on the counts, not "loading"
    els.summary.textContent = parts.join(" · ");
    els.empty.hidden = n !== 0;
    els.truncated.hidden = !truncated;
  }

  // --- loading -------------------------------------------------------------------------------

  async function load() {
    if (!config.night_round_url) return;
    if (loading) {
      reloadAgain = true;
      return loading;
    }
    loading = (async () => {
      try {
        const response = await fetch(config.night_round_url, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.status === 401) return signedOut();
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const answer = await response.json();
        const next = answer.sites.find((s) => s.site_id === config.site_id);
        if (!next) throw new Error("site missing from the answer");
        const before = site;
        site = next;
        truncated = answer.truncated;
        settlePending();
        render();
        if (before) announceChanges(before, site);
        document.body.dataset.loaded = "true";
      } catch (error) {
        console.warn("loading the night round failed", error);
        if (!site) {
          els.summary.removeAttribute("data-i18n");
          els.summary.textContent = t("night_load_failed");
        }
        scheduleReconnect();
      }
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
    if (reloadAgain) {
      reloadAgain = false;
      await load();
    }
  }

  function reloadSoon() {
    if (reloadTimer !== null) return;
    reloadTimer = window.setTimeout(() => {
      reloadTimer = null;
      load();
    }, RELOAD_DEBOUNCE_MS);
  }

  // A recorded visit waits for the supervision pass; once the check is no longer one a visit
  // settles, the API's state says what happened.
  function settlePending() {
    const states = new Map(site.checks.map((check) => [keyOf(check), check.state]));
    for (const key of [...pending.keys()]) {
      if (!VISIT_SETTLES.has(states.get(key))) pending.delete(key);
    }
  }

  function announceChanges(before, after) {
    const was = new Map(before.checks.map((check) => [keyOf(check), check.state]));
    for (const check of after.checks) {
      const old = was.get(keyOf(check));
      if (old === undefined || old === check.state) continue;
      if (ATTENTION.has(check.state) || check.state === "visited") {
        announce(
          t("night_changed", {
            label: check.residence_label,
            time: check.planned_local,
            state: t(`night_state_${check.state}`),
          }),
        );
      }
    }
  }

  function announce(text) {
    // A fresh text node each time, so that screen readers announce a repeat of the same words.
    els.announcer.replaceChildren(document.createTextNode(text));
  }

  async function recordVisit(row) {
    const check = site?.checks.find((c) => keyOf(c) === row.dataset.key);
    if (!check) return;
    const note = row.querySelector("input.note").value.trim();
    const error = row.querySelector(".action-error");
    const button = row.querySelector("button.record");
    error.textContent = "";
    button.disabled = true;
    try {
      const url = config.visits_url.replace("{id}", encodeURIComponent(check.residence_id));
      const response = await fetch(url, {
        method: "POST",
        headers: HEADERS,
        credentials: "same-origin",
        body: JSON.stringify(note ? { note } : {}),
      });
      if (response.status === 401) return signedOut();
      if (response.status === 403) {
        error.textContent = t("action_forbidden");
        return;
      }
      // 409: staff recorded a visit there at this very instant already; it is recorded.
      if (!response.ok && response.status !== 409) throw new Error(await errorDetail(response));
      const body = await response.json().catch(() => null);
      row.querySelector("input.note").value = "";
      pending.set(row.dataset.key, body?.visited_at ?? new Date().toISOString());
      fillRow(row, check);
      announce(t("night_visit_recorded_for", { label: check.residence_label }));
      // Move the focus off the vanished form to the row's own words, not to the page's top.
      const title = row.querySelector("h3.residence");
      title.tabIndex = -1;
      title.focus();
    } catch (failure) {
      error.textContent = t("action_failed", { detail: failure.message });
    } finally {
      button.disabled = false;
    }
  }

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
    } catch (_) {
      // not JSON: the status says enough
    }
    return `HTTP ${response.status}`;
  }

  function signedOut() {
    window.location.assign("/login");
  }

  // --- the live stream -----------------------------------------------------------------------

  function connect() {
    reconnectTimer = null;
    if (source) source.close();
    source = new EventSource(config.stream_url, { withCredentials: true });
    for (const kind of ["alert.opened", "alert.updated", "alert.resolved"]) {
      source.addEventListener(kind, (event) => {
        let alert;
        try {
          alert = JSON.parse(event.data);
        } catch (_) {
          console.warn("unreadable event", event.data);
          return;
        }
        if (SUPERVISION_RULES.has(alert.rule) && alert.site_id === config.site_id) reloadSoon();
      });
    }
    source.onopen = () => {
      reconnectDelay = RECONNECT_MIN_MS;
      setConnectionLost(false);
      // Every (re)connect refetches: whatever changed while we were away is on the page after.
      load();
    };
    source.onerror = () => {
      setConnectionLost(true);
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (an HTTP error such as
      // 401 or 503), so we try again ourselves, and find out on the way if we were signed out.
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) return;
    const delay = reconnectDelay * (0.5 + Math.random() / 2);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
    reconnectTimer = window.setTimeout(async () => {
      reconnectTimer = null;
      try {
        const response = await fetch(config.night_round_url, {
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.status === 401) return signedOut();
      } catch (_) {
        // the server is not there yet: the EventSource below fails and we come back
      }
      if (!source || source.readyState === EventSource.CLOSED) connect();
      else if (!site) load();
    }, delay);
  }

  function setConnectionLost(lost) {
    connectionLost = lost;
    els.banner.textContent = lost ? t("connection_lost") : "";
    els.banner.hidden = !lost;
    document.body.classList.toggle("offline", lost);
    // The state for tests and style: connecting, open, lost.
    document.body.dataset.live = lost ? "lost" : "open";
  }

  // --- start ---------------------------------------------------------------------------------

  if (els.language) {
    els.language.addEventListener("click", () => {
      lang = lang === "sv" ? "en" : "sv";
      try {
        window.localStorage.setItem(LANG_KEY, lang);
      } catch (_) {
        // not stored: the choice lasts until the page is reloaded
      }
      applyLanguage();
    });
  }
  document.body.dataset.live = "connecting";
  applyLanguage();
  if (!config.night_round_url) {
    // No site to show: nothing to fetch or listen for.
    document.body.dataset.live = "open";
    document.body.dataset.loaded = "true";
    return;
  }
  window.setInterval(load, config.refresh_s * 1000);
  // A phone that wakes up shows the night as it is now, not as it was when it went to sleep.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") load();
  });
  connect();
})();
