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
  // Who this board is for (issue 12): it shows the alerts whose `audiences` meet these, with the
  // buttons on those whose audiences meet what the user acts on. An alert without `audiences`
  // (from an older server) is for everyone.
  const BOARD_AUDIENCES = new Set(config.audiences ?? ["care", "technical"]);
  const ACT_AUDIENCES = new Set(config.act_audiences ?? []);
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
  // The countdown to a response's next escalation step (+#12) moves by the second.
  const COUNTDOWN_MS = 1000;
  // While an alarm nobody has taken waits and the tab is hidden, the beep repeats this often.
  // Chrome throttles a hidden tab's timers, but not those of a page that is playing sound.
  const RING_MS = 3000;

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
    notifyPanel: document.getElementById("notify-panel"),
    notifyText: document.getElementById("notify-text"),
    notifyEnable: document.getElementById("notify-enable"),
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
  let responseActions = null; // the answer of /api/v1/response-actions: the close form's choices
  let actionsRequest = null;
  let ringTimer = null; // the repeating beep while an alarm waits in a hidden tab
  const notifications = new Map(); // alert id -> the Notification shown for it (null: by the worker)

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

  // A reason in the page's language from its code and arguments (devices/reasons.py): the
  // template of the code, "{name}" its arguments; "*_s" are seconds. An alert stored before
  // reasons had codes, or a code this page does not know, keeps the text it came with.
  function reasonText(code, args, fallback) {
    const template = code && args ? STRINGS[lang].reason?.[code] : undefined;
    if (template === undefined) return fallback ?? "";
    const text = template.replace(/\{(\w+)\}/g, (_, name) => reasonValue(name, args[name]));
    return args.during_maintenance ? t("reason_during_maintenance", { reason: text }) : text;
  }

  function reasonValue(name, value) {
    if (name.endsWith("_s") && typeof value === "number") {
      // As devices.reasons.duration_text: seconds below 2 min, minutes below 2 h, else hours.
      if (value < 120) return t("reason_seconds", { n: value });
      if (value < 7200) return t("reason_minutes", { n: Math.floor(value / 60) });
      return t("reason_hours", { n: Math.floor(value / 3600) });
    }
    return STRINGS[lang].reason_values?.[name]?.[value] ?? String(value ?? "");
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
    renderNotifyPanel();
    if (connectionLost) els.banner.textContent = t("connection_lost");
    renderAll();
    renderPauses();
  }

  // --- cards ---------------------------------------------------------------------------------

  function isOnBoard(alert) {
    return (alert.state === "open" || alert.state === "acknowledged") && isForBoard(alert);
  }

  function isForBoard(alert) {
    return !alert.audiences || alert.audiences.some((a) => BOARD_AUDIENCES.has(a));
  }

  function mayAct(alert) {
    return (alert.audiences ?? ["care"]).some((a) => ACT_AUDIENCES.has(a));
  }

  function compare(a, b) {
    // An alarm nobody has taken comes before everything else: someone must go.
    const byWaiting = Number(isWaiting(b)) - Number(isWaiting(a));
    if (byWaiting !== 0) return byWaiting;
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
    if (isResponse(alert)) return buildResponseCard(alert);
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
    if (!mayAct(alert)) form.hidden = true;

    article.append(head, where, timing, markers, state, reason, form);
    card.append(article);
    return card;
  }

  function fillCard(card, alert) {
    if (isResponse(alert)) return fillResponseCard(card, alert);
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
    fillTiming(card, alert);

    fillMarkers(q(".markers"), alert);

    q(".state").textContent =
      alert.state === "acknowledged"
        ? t("state_acknowledged", {
            user: alert.acknowledged_by ?? "",
            time: formatTime(alert.acknowledged_at),
          })
        : t("state_open");
    const reason = q(".reason");
    reason.textContent = reasonText(alert.reason_code, alert.reason_args, alert.reason);
    reason.hidden = !reason.textContent;

    q(".note-label").textContent = t("note_label");
    const ack = q("button.ack");
    ack.textContent = t("acknowledge");
    ack.hidden = alert.state !== "open";
    q("button.resolve").textContent = t("resolve");
    q("button.resolve").classList.toggle("primary", alert.state !== "open");
  }

  function fillMarkers(markers, alert) {
    markers.replaceChildren();
    if (alert.escalated) markers.append(el("span", "tag tag-escalated", t("escalated")));
    if (alert.cleared) {
      const tag = el("span", "tag tag-cleared", t("cleared"));
      tag.title = t("cleared_hint");
      markers.append(tag);
      if (alert.cleared_reason) {
        const cleared = word("cleared_reason", alert.cleared_reason);
        const text = reasonText(alert.cleared_reason_code, alert.cleared_reason_args, cleared);
        markers.append(el("span", "cleared-reason", text));
      }
    }
    markers.hidden = markers.childElementCount === 0;
  }

  function fillTiming(card, alert) {
    const since = card.querySelector(".since");
    since.dateTime = alert.opened_at;
    since.textContent = t("opened_at", { time: formatTime(alert.opened_at) });
    card.querySelector(".count").textContent =
      alert.count > 1 ? ` · ${t("count", { n: alert.count })}` : "";
    card.querySelector(".duration").textContent = t("open_for", {
      duration: formatDuration(alert.opened_at),
    });
  }

  // --- the alarm response (+#12): take it, get there, close it ----------------------------

  // A response alert carries `response` (null for the others, which keep acknowledge/resolve).
  function isResponse(alert) {
    return alert.response != null;
  }

  // Nobody has it: open, or offered to a colleague who has not taken it yet.
  function isWaiting(alert) {
    const state = alert.response?.state;
    return state === "open" || state === "forwarded";
  }

  // Where to go: the residence when the alert has one, else the device's own label.
  function place(alert) {
    return alert.residence_label || alert.device_label || alert.device_id;
  }

  function button(className, move) {
    const node = el("button", className);
    node.type = "button";
    node.dataset.move = move;
    return node;
  }

  function buildResponseCard(alert) {
    const card = el("li", "card response");
    card.dataset.id = String(alert.id);
    const id = alert.id;
    const article = el("article");
    const titleId = `alert-${id}-title`;
    article.setAttribute("aria-labelledby", titleId);

    // The residence first and large: it is where to go; then what happened.
    const title = el("h2", "resp-title");
    title.id = titleId;
    title.tabIndex = -1; // where the focus goes when the button that had it goes away
    title.append(el("span", "resp-place"), " ", el("span", "rule"));
    const line = el("p", "resp-line");
    line.append(el("span", "severity"), " ", el("span", "resp-status"));
    const where = el("p", "where");
    where.append(el("strong", "label"), el("span", "site"), el("span", "kind"));
    const timing = el("p", "timing");
    timing.append(el("span", "duration"), " · ", el("time", "since"), el("span", "count"));
    const next = el("p", "resp-next");
    // The promise's countdown ticks every second, so screen readers get a static label (the
    // deadline's clock time) instead: no aria-live, nothing announced each second.
    const promise = el("p", "resp-promise");
    const clock = el("span", "resp-promise-clock");
    clock.setAttribute("aria-hidden", "true");
    promise.append(clock, el("span", "resp-promise-label visually-hidden"));
    const markers = el("p", "markers");
    const reason = el("p", "reason");

    const buttons = el("div", "resp-buttons");
    const accept = button("resp-accept primary", "accept");
    const arrive = button("resp-arrive", "on-site");
    const openClose = button("resp-open-close", "close");
    const openForward = button("resp-open-forward", "forward");
    buttons.append(accept, arrive, openClose, openForward);

    // On site: whether they could talk with the person (the API keeps it with the arrival).
    const contact = el("div", "resp-contact");
    contact.setAttribute("role", "group");
    const question = el("p", "resp-contact-question");
    question.id = `alert-${id}-contact`;
    contact.setAttribute("aria-labelledby", question.id);
    const contactButtons = el("div", "buttons");
    for (const made of [true, false]) {
      const choice = button(made ? "resp-contact-yes" : "resp-contact-no", "on-site");
      choice.setAttribute("aria-pressed", "false");
      choice.addEventListener("click", () => move(id, "on-site", { contact_made: made }, card));
      contactButtons.append(choice);
    }
    contact.append(question, contactButtons);

    const closeForm = buildCloseForm(id, card);
    const forwardForm = buildForwardForm(id, card);
    openClose.setAttribute("aria-controls", closeForm.id);
    openForward.setAttribute("aria-controls", forwardForm.id);
    const error = el("p", "action-error");
    error.setAttribute("role", "alert");

    accept.addEventListener("click", () => move(id, "accept", {}, card));
    arrive.addEventListener("click", () => move(id, "on-site", {}, card));
    openClose.addEventListener("click", () => toggleForm(card, closeForm, openClose));
    openForward.addEventListener("click", () => toggleForm(card, forwardForm, openForward));

    const actions = el("div", "resp-actions");
    actions.append(contact, buttons, closeForm, forwardForm);
    if (!config.can_act) actions.hidden = true;
    article.append(title, line, where, timing, promise, next, markers, reason, actions, error);
    card.append(article);
    return card;
  }

  function buildCloseForm(id, card) {
    const form = el("form", "resp-form resp-close-form");
    form.id = `alert-${id}-close`;
    form.noValidate = true;
    form.hidden = true;
    const fieldset = el("fieldset", "resp-choices");
    fieldset.append(el("legend", "resp-legend"));
    const hint = el("p", "resp-hint");
    const noteId = `alert-${id}-close-note`;
    const noteLabel = el("label", "note-label");
    noteLabel.htmlFor = noteId;
    const note = el("input", "resp-note");
    note.id = noteId;
    note.maxLength = 2000;
    note.autocomplete = "off";
    const buttons = el("div", "buttons");
    const submit = el("button", "primary resp-close-submit");
    submit.type = "submit";
    const cancel = el("button", "resp-cancel");
    cancel.type = "button";
    buttons.append(submit, cancel);
    form.append(fieldset, hint, noteLabel, note, buttons);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitClose(id, card, form);
    });
    cancel.addEventListener("click", () => closeForms(card, true));
    return form;
  }

  function buildForwardForm(id, card) {
    const form = el("form", "resp-form resp-forward-form");
    form.id = `alert-${id}-forward`;
    form.noValidate = true;
    form.hidden = true;
    const inputId = `alert-${id}-forward-to`;
    const label = el("label", "resp-to-label");
    label.htmlFor = inputId;
    const to = el("input", "resp-to");
    to.id = inputId;
    to.maxLength = 64;
    to.autocomplete = "off";
    to.autocapitalize = "none";
    to.spellcheck = false;
    const buttons = el("div", "buttons");
    const send = el("button", "primary resp-forward-send");
    send.type = "submit";
    const team = el("button", "resp-forward-team");
    team.type = "button";
    const cancel = el("button", "resp-cancel");
    cancel.type = "button";
    buttons.append(send, team, cancel);
    form.append(label, to, buttons);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const colleague = to.value.trim();
      if (!colleague) {
        card.querySelector(".action-error").textContent = t("response_forward_missing");
        to.focus();
        return;
      }
      if (await move(id, "forward", { to: colleague }, card)) to.value = "";
    });
    team.addEventListener("click", () => move(id, "forward", { to: null }, card));
    cancel.addEventListener("click", () => closeForms(card, true));
    return form;
  }

  // One small form at a time under the buttons; the opener says whether it is open.
  function toggleForm(card, form, opener) {
    const opening = form.hidden;
    closeForms(card, false);
    if (!opening) return;
    form.hidden = false;
    opener.setAttribute("aria-expanded", "true");
    card.querySelector(".action-error").textContent = "";
    if (form.classList.contains("resp-close-form")) {
      if (!responseActions) loadResponseActions();
      const first = form.querySelector("input[type=radio]:not(:disabled)");
      (first ?? form.querySelector(".resp-note")).focus();
    } else {
      form.querySelector(".resp-to").focus();
    }
  }

  function closeForms(card, refocus) {
    for (const [formClass, openerClass] of [
      ["resp-close-form", "resp-open-close"],
      ["resp-forward-form", "resp-open-forward"],
    ]) {
      const form = card.querySelector(`.${formClass}`);
      const opener = card.querySelector(`.${openerClass}`);
      const wasOpen = !form.hidden;
      form.hidden = true;
      opener.setAttribute("aria-expanded", "false");
      if (wasOpen && refocus && !opener.hidden) opener.focus();
    }
  }

  function statusText(alert) {
    const response = alert.response;
    const me = config.username;
    switch (response.state) {
      case "forwarded":
        return response.offered_to === me
          ? t("response_offered_you")
          : t("response_offered", { user: response.offered_to ?? "" });
      case "accepted":
        return response.holder === me
          ? t("response_holder_you")
          : t("response_holder", { user: response.holder ?? "" });
      case "on_site":
        return response.on_site_source === "lock"
          ? t("response_on_site_lock", { time: formatTime(response.on_site_at) })
          : t("response_on_site", {
              user: response.on_site_by ?? "",
              time: formatTime(response.on_site_at),
            });
      case "closed":
        return t("response_closed", { user: response.closed_by ?? "" });
      default:
        return t("response_nobody");
    }
  }

  function fillResponseCard(card, alert) {
    const response = alert.response;
    const q = (selector) => card.querySelector(selector);
    card.className = `card response sev-${alert.severity} resp-${response.state}`;
    const placeText = q(".resp-place");
    placeText.textContent = place(alert);
    // Named .residence when it is one (the non-response card's name for the same thing).
    placeText.classList.toggle("residence", Boolean(alert.residence_label));
    q(".rule").textContent = word("rule", alert.rule);
    q(".severity").textContent = word("severity", alert.severity);
    q(".resp-status").textContent = statusText(alert);
    const label = q(".label");
    label.textContent = alert.device_label || alert.device_id;
    label.hidden = !alert.residence_label; // otherwise it is the heading already
    q(".site").textContent = alert.site_name || alert.site_id;
    q(".kind").textContent = word("kind", alert.device_kind);
    fillTiming(card, alert);
    fillPromise(card, alert);
    fillNextStep(card, alert);
    fillMarkers(q(".markers"), alert);
    const reason = q(".reason");
    reason.textContent = reasonText(alert.reason_code, alert.reason_args, alert.reason);
    reason.hidden = !reason.textContent;

    const me = config.username;
    const waiting = isWaiting(alert);
    const mine = response.holder === me;
    const accept = q(".resp-accept");
    const arrive = q(".resp-arrive");
    const openClose = q(".resp-open-close");
    const openForward = q(".resp-open-forward");
    accept.textContent = t("response_accept");
    arrive.textContent = t("response_arrive");
    openClose.textContent = t("response_close");
    openForward.textContent = t("response_forward");
    accept.hidden = !waiting;
    arrive.hidden = response.state !== "accepted";
    arrive.classList.toggle("primary", mine);
    openClose.hidden = response.state !== "accepted" && response.state !== "on_site";
    openClose.classList.toggle("primary", response.state === "on_site");
    // Only the one who has it may pass it on; nobody once someone is with the person.
    openForward.hidden = !(waiting || (response.state === "accepted" && mine));
    q(".resp-contact").hidden = response.state !== "on_site";
    q(".resp-contact-question").textContent = t("response_contact_question");
    for (const [selector, made, key] of [
      [".resp-contact-yes", true, "response_contact_yes"],
      [".resp-contact-no", false, "response_contact_no"],
    ]) {
      const choice = q(selector);
      choice.textContent = t(key);
      choice.setAttribute("aria-pressed", String(response.contact_made === made));
    }
    if (openClose.hidden) q(".resp-close-form").hidden = true;
    if (openForward.hidden) q(".resp-forward-form").hidden = true;
    openClose.setAttribute("aria-expanded", String(!q(".resp-close-form").hidden));
    openForward.setAttribute("aria-expanded", String(!q(".resp-forward-form").hidden));

    q(".resp-legend").textContent = t("response_close_legend");
    q(".resp-close-form .note-label").textContent = t("note_label");
    q(".resp-close-submit").textContent = t("response_close_submit");
    q(".resp-to-label").textContent = t("response_forward_label");
    q(".resp-forward-send").textContent = t("response_forward_send");
    q(".resp-forward-team").textContent = t("response_forward_team");
    for (const cancel of card.querySelectorAll(".resp-cancel")) cancel.textContent = t("response_cancel");
    fillChoices(card, alert);
  }

  // The close actions as large radio buttons, titled in the board's language. Those that say
  // someone was with the person wait for the arrival (the API would refuse them before it).
  function fillChoices(card, alert) {
    const fieldset = card.querySelector(".resp-choices");
    const onSite = alert.response.state === "on_site";
    const key = `${lang}:${onSite}:${responseActions ? responseActions.length : 0}`;
    const hint = card.querySelector(".resp-hint");
    hint.textContent = t("response_close_needs_arrival");
    hint.hidden = onSite || !(responseActions ?? []).some((action) => action.arrived);
    if (fieldset.dataset.key === key) return; // rebuilt only when it changes: focus stays
    fieldset.dataset.key = key;
    const chosen = fieldset.querySelector("input:checked")?.value;
    const name = `alert-${alert.id}-action`;
    const choices = (responseActions ?? []).map((action) => {
      const choice = el("label", "resp-choice");
      const input = el("input");
      input.type = "radio";
      input.name = name;
      input.value = action.code;
      input.disabled = action.arrived && !onSite;
      input.checked = action.code === chosen && !input.disabled;
      choice.append(input, el("span", "", lang === "sv" ? action.title_sv : action.title_en));
      return choice;
    });
    fieldset.replaceChildren(fieldset.querySelector("legend"), ...choices);
  }

  function fillNextStep(card, alert) {
    const next = card.querySelector(".resp-next");
    const step = alert.response?.next_step;
    if (!step || !step.at || alert.response.state === "closed") {
      next.hidden = true;
      next.textContent = "";
      return;
    }
    next.hidden = false;
    // A step that alerts the site's second group says so when the site has none (issue 12):
    // then only the same staff are alerted again.
    const what =
      step.second_group === false
        ? word("response_step_no_second_group", step.name)
        : word("response_step", step.name);
    const left = Math.ceil((new Date(step.at).getTime() - Date.now()) / 1000);
    next.textContent =
      left > 0
        ? t("response_next_step", { time: formatCountdown(left), step: what })
        : t("response_next_step_due", { step: what });
  }

  // The site's promise that applies now (+#12): contact until someone first took the alarm,
  // then someone on site; none once on site, or where the site promises nothing.
  function currentPromise(response) {
    if (response.state === "closed" || response.on_site_at) return null;
    if (!response.accepted_at && response.contact_due_at) {
      return { kind: "contact", due: response.contact_due_at };
    }
    return response.on_site_due_at ? { kind: "on_site", due: response.on_site_due_at } : null;
  }

  function fillPromise(card, alert) {
    const node = card.querySelector(".resp-promise");
    const promise = currentPromise(alert.response);
    node.hidden = !promise;
    if (!promise) return;
    const ms = new Date(promise.due).getTime() - Date.now();
    const over = ms <= 0;
    const values = {
      promise: word("response_promise", promise.kind),
      time: formatCountdown(over ? Math.floor(-ms / 1000) : Math.ceil(ms / 1000)),
    };
    // "Over" in words, not only in red (WCAG 1.4.1).
    const clock = t(over ? "response_promise_over" : "response_promise_left", values);
    setText(node.querySelector(".resp-promise-clock"), clock);
    setText(
      node.querySelector(".resp-promise-label"),
      t(over ? "response_promise_missed_label" : "response_promise_label", {
        promise: values.promise,
        time: formatTime(promise.due),
      }),
    );
    node.classList.toggle("over", over);
  }

  // Only a changed text is written: a tick that changes nothing touches no node.
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function formatCountdown(seconds) {
    const pad = (n) => String(n).padStart(2, "0");
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  async function loadResponseActions() {
    if (actionsRequest) return actionsRequest;
    actionsRequest = (async () => {
      try {
        const response = await fetch(config.response_actions_url, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        if (response.status === 401) return signedOut();
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        responseActions = await response.json();
        renderAll();
      } catch (error) {
        // Opening a close form asks again.
        console.warn("loading the close actions failed", error);
      } finally {
        actionsRequest = null;
      }
    })();
    return actionsRequest;
  }

  async function submitClose(id, card, form) {
    const chosen = form.querySelector("input[type=radio]:checked");
    const error = card.querySelector(".action-error");
    if (!chosen) {
      error.textContent = t("response_close_choose");
      form.querySelector("input[type=radio]:not(:disabled)")?.focus();
      return;
    }
    const note = form.querySelector(".resp-note").value.trim();
    await move(id, "close", { action: chosen.value, note }, card);
  }

  // One move of the response. A 409 is said in the board's words (who has it, from the list
  // fetched again) and the board refreshed; true when the move went through.
  async function move(id, path, body, card) {
    const error = card.querySelector(".action-error");
    const buttons = [...card.querySelectorAll("button")];
    const hadFocus = card.contains(document.activeElement);
    error.textContent = "";
    for (const node of buttons) node.disabled = true;
    try {
      const response = await fetch(`${config.alerts_url}/${encodeURIComponent(id)}/${path}`, {
        method: "POST",
        headers: HEADERS,
        credentials: "same-origin",
        body: JSON.stringify(body),
      });
      if (response.status === 401) {
        signedOut();
        return false;
      }
      if (response.status === 403) {
        error.textContent = t("action_forbidden");
        return false;
      }
      if (response.status === 409) {
        const refusal = await response.json().catch(() => ({}));
        await load();
        const text = refusalText(refusal, alerts.get(id));
        // The card may have left the board (closed by someone else): the announcer says it then.
        error.textContent = text;
        announce(text);
        return false;
      }
      if (response.status === 422 && path === "forward") {
        error.textContent = t("response_colleague_unknown");
        return false;
      }
      if (!response.ok) throw new Error(await errorDetail(response));
      const alert = await response.json().catch(() => null);
      closeForms(card, false);
      if (alert && alert.id === id && alert.state) {
        apply(alert.state === "resolved" ? "alert.resolved" : "alert.updated", alert);
      }
      return true;
    } catch (failure) {
      error.textContent = t("action_failed", { detail: failure.message });
      return false;
    } finally {
      for (const node of buttons) node.disabled = false;
      if (hadFocus) keepFocus(card);
    }
  }

  function refusalText(refusal, alert) {
    const texts = STRINGS[lang].response_refused ?? {};
    const text = texts[refusal.code];
    if (text) {
      const user = alert?.response?.holder || alert?.response?.closed_by || t("response_someone");
      return text.replace("{user}", user);
    }
    return t("action_failed", { detail: refusal.detail ?? "HTTP 409" });
  }

  // The button pressed may be gone (Accept once taken): the next one, or the card's heading.
  function keepFocus(card) {
    if (!card.isConnected) return;
    const active = document.activeElement;
    if (active && active !== document.body && card.contains(active) && active.offsetParent) return;
    const next = [...card.querySelectorAll(".resp-buttons button")].find((b) => !b.hidden);
    (next ?? card.querySelector(".resp-title")).focus();
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
      if (card && card.classList.contains("response") !== isResponse(alert)) {
        card.remove();
        card = null;
      }
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
    if (!responseActions && sorted.some(isResponse)) loadResponseActions();
    updateAlarm();
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

  function tickCountdowns() {
    for (const alert of alerts.values()) {
      if (!alert.response) continue;
      const card = cardFor(alert.id);
      if (!card) continue;
      fillPromise(card, alert);
      if (alert.response.next_step) fillNextStep(card, alert);
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
    } else if (before && isWaiting(before) && alert.response?.holder) {
      // A colleague took it: said aloud too, since the card's colour is not heard.
      if (alert.response.holder !== config.username) {
        announce(t("response_taken_announce", { user: alert.response.holder, place: place(alert) }));
      }
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
      const response = await fetch(config.alerts_url + (config.alerts_query ?? ""), {
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
    // The stream asks for the board's audience as the list does, so another audience's
    // alerts are not sent at all (isForBoard still decides what is shown).
    source = new EventSource(config.stream_url + (config.alerts_query ?? ""), {
      withCredentials: true,
    });
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

  // --- notifications in the background (+#12) ------------------------------------------------

  // Only a click asks for the permission; the panel explains what it is for, and says so when
  // the browser has blocked it.
  function renderNotifyPanel() {
    const supported = "Notification" in window;
    const permission = supported ? Notification.permission : "unsupported";
    // The board's own notifications are for alarms (those who act on them); Web Push (+#12),
    // also a technician's, keeps the panel while this phone does not get pushes yet.
    const asking = config.can_act && supported && permission !== "granted";
    els.notifyPanel.hidden = !asking && !pushOffered(permission);
    const key = permission === "denied" ? "response_notify_denied" : "response_notify_explain";
    els.notifyText.dataset.i18n = key;
    els.notifyText.textContent = t(key);
    els.notifyText.hidden = !asking;
    els.notifyEnable.hidden = !asking || permission !== "default";
    renderPush(permission);
  }

  async function askNotifications() {
    try {
      await Notification.requestPermission();
    } catch (error) {
      console.warn("asking for notifications failed", error);
    }
    renderNotifyPanel();
    updateAlarm();
  }

  function watchNotificationPermission() {
    // A change in the browser's settings shows at once where the browser tells us.
    navigator.permissions
      ?.query({ name: "notifications" })
      .then((status) => {
        status.onchange = () => {
          renderNotifyPanel();
          updateAlarm();
        };
      })
      .catch(() => {});
  }

  // While an alarm nobody has taken waits and the tab is hidden: a notification per alarm and
  // a repeating beep (when the sound is on), until someone takes it or the tab is seen again.
  function updateAlarm() {
    const hidden = document.visibilityState === "hidden";
    const waiting = config.can_act ? [...alerts.values()].filter(isWaiting) : [];
    const ring = hidden && waiting.length > 0;
    if (ring && ringTimer === null) {
      beep();
      ringTimer = window.setInterval(beep, RING_MS);
    } else if (!ring && ringTimer !== null) {
      window.clearInterval(ringTimer);
      ringTimer = null;
    }
    // For tests and style: whether the board is calling for attention.
    document.body.dataset.ringing = String(ring);
    const stillWaiting = new Set(waiting.map((alert) => alert.id));
    for (const [id, shown] of notifications) {
      if (ring && stillWaiting.has(id)) continue;
      notifications.delete(id);
      if (shown) shown.close();
      else closeWorkerNotification(id);
    }
    if (ring) for (const alert of waiting) notify(alert);
  }

  function notificationTag(id) {
    return `carewatch-alert-${id}`;
  }

  function notify(alert) {
    if (notifications.has(alert.id)) return;
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const title = t("response_notify_title", { place: place(alert) });
    const options = {
      body: t("response_notify_body", {
        rule: word("rule", alert.rule),
        site: alert.site_name || alert.site_id,
      }),
      tag: notificationTag(alert.id),
      lang,
      requireInteraction: true,
    };
    try {
      const shown = new Notification(title, options);
      shown.onclick = () => {
        window.focus();
        shown.close();
      };
      notifications.set(alert.id, shown);
    } catch (_) {
      // Chrome on Android: only a service worker may show one (when the page has one).
      notifications.set(alert.id, null);
      navigator.serviceWorker
        ?.getRegistration()
        .then((registration) => registration?.showNotification(title, options))
        .catch((error) => console.warn("no notification", error));
    }
  }

  function closeWorkerNotification(id) {
    navigator.serviceWorker
      ?.getRegistration()
      .then((registration) => registration?.getNotifications({ tag: notificationTag(id) }))
      .then((shown) => {
        for (const notification of shown ?? []) notification.close();
      })
      .catch(() => {});
  }

  // --- Web Push: alarms on this phone while no board is open (+#12) ----------------------------

  // The service worker (/sw.js) shows what the notifier pushes; this registers it, subscribes
  // with the server's VAPID key and hands the subscription to the API. Offered only where the
  // server has a VAPID key (config.push_key_url) and the browser can push.
  const pushSupported =
    Boolean(config.push_key_url) && "serviceWorker" in navigator && "PushManager" in window;
  let pushState = "off"; // off | on (this browser's subscription is the user's) | failed | unavailable
  const pushText = el("p", "push-text");
  pushText.id = "push-text";
  pushText.setAttribute("role", "status");
  const pushEnable = el("button", "primary");
  pushEnable.type = "button";
  pushEnable.id = "push-enable";
  pushEnable.dataset.i18n = "push_enable";
  pushEnable.textContent = t("push_enable");
  els.notifyPanel.append(pushText, pushEnable);

  function pushOffered(permission) {
    return config.can_push && pushSupported && pushState !== "on" && permission !== "denied";
  }

  function renderPush(permission) {
    const offered = pushOffered(permission);
    const key = { failed: "push_failed", unavailable: "push_unavailable" }[pushState] ?? "push_explain";
    pushText.dataset.i18n = key;
    pushText.textContent = t(key);
    pushText.hidden = !offered;
    pushEnable.hidden = !offered || pushState === "unavailable";
  }

  function keyBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const raw = window.atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  // The API's answer to this browser's subscription: 201 it is the user's now, 409 another
  // user's (this phone was someone else's).
  async function postSubscription(subscription) {
    const response = await fetch(config.push_subscriptions_url, {
      method: "POST",
      headers: HEADERS,
      credentials: "same-origin",
      body: JSON.stringify(subscription.toJSON()),
    });
    if (response.status === 401) signedOut();
    return response.status;
  }

  async function enablePush() {
    pushEnable.disabled = true;
    try {
      const keyResponse = await fetch(config.push_key_url, { credentials: "same-origin" });
      if (!keyResponse.ok) {
        pushState = "unavailable";
        return;
      }
      const { public_key: publicKey } = await keyResponse.json();
      const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
      await navigator.serviceWorker.ready;
      // A fresh subscription: one left by someone else on this phone stays theirs (and dies).
      const old = await registration.pushManager.getSubscription();
      if (old) await old.unsubscribe();
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes(publicKey),
      });
      pushState = (await postSubscription(subscription)) === 201 ? "on" : "failed";
    } catch (error) {
      console.warn("Web Push not enabled", error);
      pushState = "failed";
    } finally {
      pushEnable.disabled = false;
      renderNotifyPanel();
    }
  }

  // On load: a subscription this browser already has is renewed for the user (keys may have
  // changed); if it is the user's, the button is not offered again.
  async function checkPush() {
    if (!config.can_push || !pushSupported) return;
    try {
      const registration = await navigator.serviceWorker.getRegistration("/");
      const subscription = await registration?.pushManager.getSubscription();
      if (subscription && (await postSubscription(subscription)) === 201) pushState = "on";
    } catch (error) {
      console.warn("Web Push state unknown", error);
    }
    renderNotifyPanel();
  }

  // --- start ---------------------------------------------------------------------------------

  els.sound.addEventListener("click", toggleSound);
  els.notifyEnable.addEventListener("click", askNotifications);
  pushEnable.addEventListener("click", enablePush);
  checkPush();
  document.addEventListener("visibilitychange", updateAlarm);
  watchNotificationPermission();
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
  window.setInterval(tickCountdowns, COUNTDOWN_MS);
  window.setInterval(loadPauses, PAUSES_REFRESH_MS);
  connect();
})();
