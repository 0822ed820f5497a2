// The alert board: the open and acknowledged alerts of the user's sites, live from the SSE stream.
//
// No framework and no build step: the page is served as is by the app. Every text comes from the
// one dictionary (strings.json, embedded in the page as #board-config); every value from the
// server goes into the page through textContent, never innerHTML.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("board-config").textContent);
  const STRINGS = config.strings;
  const TIME_ZONE = "Europe/Stockholm";
  const LANG_KEY = "carewatch.lang";
  const SEVERITY_RANK = { critical: 4, high: 3, warning: 2, info: 1 };
  const LOUD = new Set(["high", "critical"]);
  // How often "open 5 min" is recomputed; seconds are shown only in the first minute.
  const TICK_MS = 5000;
  // Our own reconnect after the browser gave up (EventSource closes for good on an HTTP error):
  // capped, jittered backoff.
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const HEADERS = { "Content-Type": "application/json", "X-Requested-With": "carewatch" };
  // What is paused now is fetched with the alerts and this often besides: absences and repairs
  // are planned in minutes and hours, and the stream does not carry them.
  const PAUSES_REFRESH_MS = 60000;

  const els = {
    list: document.getElementById("alerts"),
    empty: document.getElementById("empty"),
    summary: document.getElementById("summary"),
    banner: document.getElementById("connection-banner"),
    announcer: document.getElementById("announcer"),
    sound: document.getElementById("sound-toggle"),
    language: document.getElementById("language-toggle"),
    pauses: document.getElementById("pauses"),
    pausesSummary: document.getElementById("pauses-summary"),
    pausesAbsent: document.getElementById("pauses-absent"),
    pausesRepair: document.getElementById("pauses-repair"),
  };

  const alerts = new Map(); // id -> AlertPublic
  let lang = pickLanguage();
  let source = null;
  let connectionLost = false;
  let reconnectDelay = RECONNECT_MIN_MS;
  let reconnectTimer = null;
  let loaded = false;
  let fetching = null; // events that arrived while the list was being fetched, replayed after
  let audio = null; // an AudioContext, made on the click that turns the sound on
  let pauses = null; // the last answer of /api/v1/pauses
  let pausesLoading = false;

  // --- texts ---------------------------------------------------------------------------------

  function pickLanguage() {
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

  function word(group, value) {
    return STRINGS[lang][group]?.[value] ?? value;
  }

  const formatters = {};
  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const locale = lang === "sv" ? "sv-SE" : "en-GB";
    const sameDay = dayKey(date) === dayKey(new Date());
    const key = `${locale}:${sameDay}`;
    formatters[key] ??= new Intl.DateTimeFormat(locale, {
      timeZone: TIME_ZONE,
      hour: "2-digit",
      minute: "2-digit",
      ...(sameDay ? {} : { day: "numeric", month: "short" }),
    });
    return formatters[key].format(date);
  }

  const dayFormatter = new Intl.DateTimeFormat("sv-SE", { timeZone: TIME_ZONE, dateStyle: "short" });
  function dayKey(date) {
    return dayFormatter.format(date);
  }

  // A time in a site's own zone (a pause's end): the hour, and the date when it is not today
  // there. A zone this browser does not know is shown in the board's.
  const siteFormatters = {};
  function siteFormatter(zone, options) {
    const locale = lang === "sv" ? "sv-SE" : "en-GB";
    const key = `${locale}:${zone}:${JSON.stringify(options)}`;
    if (!siteFormatters[key]) {
      try {
        siteFormatters[key] = new Intl.DateTimeFormat(locale, { timeZone: zone, ...options });
      } catch (_) {
        siteFormatters[key] = new Intl.DateTimeFormat(locale, { timeZone: TIME_ZONE, ...options });
      }
    }
    return siteFormatters[key];
  }

  function formatSiteTime(iso, zone) {
    const date = new Date(iso);
    const day = siteFormatter(zone, { dateStyle: "short" });
    const sameDay = day.format(date) === day.format(new Date());
    return siteFormatter(zone, {
      hour: "2-digit",
      minute: "2-digit",
      ...(sameDay ? {} : { day: "numeric", month: "short" }),
    }).format(date);
  }

  function formatDuration(fromIso) {
    const seconds = Math.max(0, Math.floor((Date.now() - new Date(fromIso).getTime()) / 1000));
    if (seconds < 60) return t("duration_seconds", { n: seconds });
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return t("duration_minutes", { n: minutes });
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return t("duration_hours", { h: hours, m: minutes % 60 });
    return t("duration_days", { d: Math.floor(hours / 24), h: hours % 24 });
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.title = `${t("board_title")} – ${t("app_name")}`;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n, { user: el.dataset.user ?? "" });
    }
    for (const el of document.querySelectorAll("[data-i18n-aria]")) {
      el.setAttribute("aria-label", t(el.dataset.i18nAria));
    }
    for (const el of document.querySelectorAll("[data-i18n-title]")) {
      el.title = t(el.dataset.i18nTitle);
    }
    els.language.lang = lang === "sv" ? "en" : "sv";
    renderSound();
    if (connectionLost) els.banner.textContent = t("connection_lost");
    renderAll();
    renderPauses();
  }

  // --- cards ---------------------------------------------------------------------------------

  function isOnBoard(alert) {
    return alert.state === "open" || alert.state === "acknowledged";
  }

  function compare(a, b) {
    const bySeverity = (SEVERITY_RANK[b.severity] ?? 0) - (SEVERITY_RANK[a.severity] ?? 0);
    if (bySeverity !== 0) return bySeverity;
    const byTime = new Date(b.opened_at).getTime() - new Date(a.opened_at).getTime();
    return byTime !== 0 ? byTime : b.id - a.id;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function buildCard(alert) {
    const card = el("li", "card");
    card.dataset.id = String(alert.id);
    const article = el("article");
    const titleId = `alert-${alert.id}-title`;
    article.setAttribute("aria-labelledby", titleId);

    const head = el("div", "card-head");
    head.append(el("span", "severity"), el("h2", "rule"));
    head.lastChild.id = titleId;
    const where = el("p", "where");
    where.append(
      el("strong", "label"),
      el("span", "residence"),
      el("span", "site"),
      el("span", "kind"),
    );
    const timing = el("p", "timing");
    const since = el("time", "since");
    timing.append(el("span", "duration"), " · ", since, el("span", "count"));
    const markers = el("p", "markers");
    const state = el("p", "state");
    const reason = el("p", "reason");

    const form = el("form", "actions");
    form.noValidate = true;
    const noteId = `alert-${alert.id}-note`;
    const noteLabel = el("label", "note-label");
    noteLabel.htmlFor = noteId;
    const note = el("input", "note");
    note.id = noteId;
    note.name = "note";
    note.maxLength = 500;
    note.autocomplete = "off";
    const buttons = el("div", "buttons");
    const ack = el("button", "ack primary");
    ack.type = "button";
    ack.dataset.action = "ack";
    const resolve = el("button", "resolve");
    resolve.type = "button";
    resolve.dataset.action = "resolve";
    buttons.append(ack, resolve);
    const error = el("p", "action-error");
    error.setAttribute("role", "alert");
    form.append(noteLabel, note, buttons, error);
    form.addEventListener("submit", (event) => event.preventDefault());
    for (const button of [ack, resolve]) {
      button.addEventListener("click", () => act(alert.id, button.dataset.action, card));
    }
    if (!config.can_act) form.hidden = true;

    article.append(head, where, timing, markers, state, reason, form);
    card.append(article);
    return card;
  }

  function fillCard(card, alert) {
    card.className = `card sev-${alert.severity} state-${alert.state}`;
    const q = (selector) => card.querySelector(selector);
    const severity = q(".severity");
    severity.textContent = word("severity", alert.severity);
    q(".rule").textContent = word("rule", alert.rule);
    q(".label").textContent = alert.device_label || alert.device_id;
    // The residence staff know the place by ("Lgh 12"), when the alert has one.
    const residence = q(".residence");
    residence.textContent = alert.residence_label || "";
    residence.hidden = !alert.residence_label;
    q(".site").textContent = alert.site_name || alert.site_id;
    q(".kind").textContent = word("kind", alert.device_kind);
    const since = q(".since");
    since.dateTime = alert.opened_at;
    since.textContent = t("opened_at", { time: formatTime(alert.opened_at) });
    q(".count").textContent = alert.count > 1 ? ` · ${t("count", { n: alert.count })}` : "";
    q(".duration").textContent = t("open_for", { duration: formatDuration(alert.opened_at) });

    const markers = q(".markers");
    markers.replaceChildren();
    if (alert.escalated) markers.append(el("span", "tag tag-escalated", t("escalated")));
    if (alert.cleared) {
      const tag = el("span", "tag tag-cleared", t("cleared"));
      tag.title = t("cleared_hint");
      markers.append(tag);
      if (alert.cleared_reason) {
        markers.append(el("span", "cleared-reason", word("cleared_reason", alert.cleared_reason)));
      }
    }
    markers.hidden = markers.childElementCount === 0;

    q(".state").textContent =
      alert.state === "acknowledged"
        ? t("state_acknowledged", {
            user: alert.acknowledged_by ?? "",
            time: formatTime(alert.acknowledged_at),
          })
        : t("state_open");
    const reason = q(".reason");
    reason.textContent = alert.reason ?? "";
    reason.hidden = !alert.reason;

    q(".note-label").textContent = t("note_label");
    const ack = q("button.ack");
    ack.textContent = t("acknowledge");
    ack.hidden = alert.state !== "open";
    q("button.resolve").textContent = t("resolve");
    q("button.resolve").classList.toggle("primary", alert.state !== "open");
  }

  function cardFor(id) {
    return els.list.querySelector(`li.card[data-id="${CSS.escape(String(id))}"]`);
  }

  function renderAll() {
    const sorted = [...alerts.values()].sort(compare);
    const wanted = new Set(sorted.map((alert) => String(alert.id)));
    for (const card of [...els.list.children]) {
      if (!wanted.has(card.dataset.id)) card.remove();
    }
    let previous = null;
    for (const alert of sorted) {
      let card = cardFor(alert.id);
      if (!card) card = buildCard(alert);
      fillCard(card, alert);
      // Move a card only when it is out of place: moving the focused one would lose the focus.
      const expected = previous ? previous.nextElementSibling : els.list.firstElementChild;
      if (card !== expected) {
        if (previous) previous.after(card);
        else els.list.prepend(card);
      }
      previous = card;
    }
    renderSummary();
  }

  function renderSummary() {
    if (!loaded) return;
    const n = alerts.size;
    els.summary.textContent = n === 1 ? t("alert_count_one") : t("alert_count_many", { n });
    els.empty.hidden = n !== 0;
  }

  function tick() {
    for (const alert of alerts.values()) {
      const card = cardFor(alert.id);
      if (!card) continue;
      card.querySelector(".duration").textContent = t("open_for", {
        duration: formatDuration(alert.opened_at),
      });
    }
  }

  // --- paused now: residents away and devices in repair (+#11) ------------------------------

  // "Sjukhus, till 14:30" with the time as a <time> element: the text's {until} is cut out.
  function untilText(key, values, iso, zone) {
    const what = el("span", "pause-what");
    const [before, after = ""] = t(key, { ...values, until: "\u0000" }).split("\u0000");
    const time = el("time", "pause-until", formatSiteTime(iso, zone));
    time.dateTime = iso;
    what.append(before, time, after);
    return what;
  }

  function pauseItem(className, label, parts, pause) {
    const item = el("li", `pause ${className}`);
    item.append(el("strong", "pause-label", label));
    for (const part of parts) if (part) item.append(" ", part);
    item.append(" ", el("span", "pause-site", pause.site_name || pause.site_id));
    if (pause.note) item.append(" ", el("span", "pause-note", pause.note));
    return item;
  }

  function absenceItem(absence) {
    const reason = word("pauses_reason", absence.reason);
    const what = absence.expected_end
      ? untilText("pauses_absent_until", { reason }, absence.expected_end, absence.timezone)
      : el("span", "pause-what", t("pauses_absent_open", { reason }));
    const item = pauseItem("pause-absent", absence.residence_label, [what], absence);
    item.dataset.residenceId = String(absence.residence_id);
    return item;
  }

  function repairItem(repair) {
    const residence = repair.residence_label
      ? el("span", "pause-residence", repair.residence_label)
      : null;
    const item = pauseItem(
      "pause-repair",
      repair.device_label || repair.device_id,
      [
        el("span", "pause-kind", word("kind", repair.device_kind)),
        residence,
        untilText("pauses_repair_until", {}, repair.ends_at, repair.timezone),
      ],
      repair,
    );
    item.dataset.deviceId = repair.device_id;
    return item;
  }

  function fillPauses(section, items) {
    section.hidden = items.length === 0;
    section.querySelector("ul").replaceChildren(...items);
  }

  function renderPauses() {
    if (!pauses) return;
    const n = pauses.absences.length + pauses.maintenance.length;
    // Nothing paused, nothing shown: the board stays about the alerts.
    els.pauses.hidden = n === 0;
    els.pausesSummary.textContent = t("pauses_summary", { n });
    fillPauses(els.pausesAbsent, pauses.absences.map(absenceItem));
    fillPauses(els.pausesRepair, pauses.maintenance.map(repairItem));
  }

  async function loadPauses() {
    if (pausesLoading) return;
    pausesLoading = true;
    try {
      const response = await fetch(els.pauses.dataset.url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) return signedOut();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      pauses = await response.json();
      renderPauses();
      // For tests and style: the pauses shown are the server's latest answer.
      document.body.dataset.pausesLoaded = "true";
    } catch (error) {
      // The last list stays: the next refresh, or the next reconnect, tries again.
      console.warn("loading the pauses failed", error);
    } finally {
      pausesLoading = false;
    }
  }

  // --- changes -------------------------------------------------------------------------------

  function apply(kind, alert) {
    const before = alerts.get(alert.id);
    if (kind === "alert.resolved" || !isOnBoard(alert)) {
      alerts.delete(alert.id);
    } else {
      alerts.set(alert.id, alert);
    }
    renderAll();
    return before;
  }

  function onChange(kind, alert) {
    if (fetching) fetching.push([kind, alert]);
    const before = apply(kind, alert);
    if (!isOnBoard(alert) || kind === "alert.resolved") return;
    const where = {
      rule: word("rule", alert.rule),
      label: alert.device_label || alert.device_id,
      site: alert.site_name || alert.site_id,
    };
    if (kind === "alert.opened" && !before) {
      announce(t("new_alert", where));
      if (LOUD.has(alert.severity)) beep();
    } else if (alert.escalated && before && !before.escalated) {
      announce(t("escalated_alert", where));
      if (LOUD.has(alert.severity)) beep();
    }
  }

  function announce(text) {
    // A fresh text node each time, so that screen readers announce a repeat of the same words.
    els.announcer.replaceChildren(document.createTextNode(text));
  }

  async function load() {
    fetching = [];
    document.body.dataset.loaded = "false";
    loadPauses();
    try {
      const response = await fetch(config.alerts_url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) return signedOut();
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const list = await response.json();
      const replay = fetching;
      alerts.clear();
      for (const alert of list) if (isOnBoard(alert)) alerts.set(alert.id, alert);
      for (const [kind, alert] of replay) apply(kind, alert);
      loaded = true;
      renderAll();
      document.body.dataset.loaded = "true";
    } catch (error) {
      console.warn("loading the alerts failed", error);
      if (!loaded) els.summary.textContent = t("load_failed");
      scheduleReconnect();
    } finally {
      fetching = null;
    }
  }

  async function act(id, action, card) {
    const note = card.querySelector("input.note").value.trim();
    const error = card.querySelector(".action-error");
    const buttons = card.querySelectorAll("button");
    error.textContent = "";
    for (const button of buttons) button.disabled = true;
    try {
      const response = await fetch(`${config.alerts_url}/${encodeURIComponent(id)}/${action}`, {
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
      if (!response.ok) throw new Error(await errorDetail(response));
      const body = await response.json().catch(() => null);
      card.querySelector("input.note").value = "";
      if (body && body.id === id && body.state) {
        apply(body.state === "resolved" ? "alert.resolved" : "alert.updated", body);
      } else if (action === "resolve") {
        alerts.delete(id);
        renderAll();
      }
    } catch (failure) {
      error.textContent = t("action_failed", { detail: failure.message });
    } finally {
      for (const button of buttons) button.disabled = false;
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
        onChange(kind, alert);
      });
    }
    source.onopen = () => {
      reconnectDelay = RECONNECT_MIN_MS;
      setConnectionLost(false);
      // Every (re)connect refetches the list: whatever happened while we were away, and
      // what the stream could not resume, is on the board afterwards.
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
        const response = await fetch(config.alerts_url, {
          credentials: "same-origin",
          cache: "no-store",
        });
        if (response.status === 401) return signedOut();
      } catch (_) {
        // the server is not there yet: the EventSource below fails and we come back
      }
      if (!source || source.readyState === EventSource.CLOSED) connect();
      else if (!loaded) load();
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

  // --- sound ---------------------------------------------------------------------------------

  function renderSound() {
    const on = audio !== null;
    els.sound.textContent = on ? t("sound_on") : t("sound_off");
    els.sound.setAttribute("aria-pressed", String(on));
  }

  function toggleSound() {
    if (audio) {
      audio.close();
      audio = null;
    } else {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) return;
      // Made on this click: browsers only let a page make sound after a user gesture.
      audio = new Context();
      beep();
    }
    renderSound();
  }

  function beep() {
    if (!audio) return;
    if (audio.state === "suspended") audio.resume();
    const start = audio.currentTime;
    const oscillator = audio.createOscillator();
    const gain = audio.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = 880;
    // A short envelope: no click at start or end.
    gain.gain.setValueAtTime(0.0001, start);
    gain.gain.exponentialRampToValueAtTime(0.3, start + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.35);
    oscillator.connect(gain).connect(audio.destination);
    oscillator.start(start);
    oscillator.stop(start + 0.4);
  }

  // --- start ---------------------------------------------------------------------------------

  els.sound.addEventListener("click", toggleSound);
  els.language.addEventListener("click", () => {
    lang = lang === "sv" ? "en" : "sv";
    try {
      window.localStorage.setItem(LANG_KEY, lang);
    } catch (_) {
      // not stored: the choice lasts until the page is reloaded
    }
    applyLanguage();
  });
  document.body.dataset.live = "connecting";
  applyLanguage();
  window.setInterval(tick, TICK_MS);
  window.setInterval(loadPauses, PAUSES_REFRESH_MS);
  connect();
})();
