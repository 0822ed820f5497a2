// Carewatch's service worker (+#12): shows an alarm the notifier pushed while no board is open,
// and brings the board up when the notification is pressed.
//
// Served at /sw.js (scope /) by dashboards/service_worker.py. The push is small JSON
// ({alert_id, event, step, rule, residence_label, site_name, severity, lang, audience, group}:
// audience "technical" is a device fault for a technician, group "second" the site's second
// group told by the escalation); its words come
// from the pages' one dictionary (strings.json) in the user's language. The tag is the board's
// own for that alert, so the board's notification and a pushed one replace each other.
"use strict";

const STRINGS_URL = "/static/strings.json";
const BOARD_URL = "/";
const HEADERS = { "Content-Type": "application/json", "X-Requested-With": "carewatch" };

async function texts(lang) {
  try {
    const response = await fetch(STRINGS_URL, { credentials: "same-origin" });
    const all = await response.json();
    return all[lang] ?? all.sv ?? {};
  } catch (_) {
    return {}; // offline: the push's own words, untranslated, are still an alarm
  }
}

function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

async function showAlarm(push) {
  const t = await texts(push.lang);
  const values = {
    rule: t.rule?.[push.rule] ?? push.rule ?? "",
    place: push.residence_label ?? "",
    site: push.site_name ?? "",
  };
  const title = fill(t.push_title ?? "{rule}: {place}", values);
  const body = fill(bodyTemplate(t, push) ?? "{site}", values);
  return self.registration.showNotification(title, {
    body,
    tag: `carewatch-alert-${push.alert_id}`,
    renotify: true, // the escalation must sound again, not update silently
    requireInteraction: true,
    lang: push.lang,
    data: { url: BOARD_URL, alert_id: push.alert_id },
  });
}

function bodyTemplate(t, push) {
  if (push.audience === "technical") return t.push_body_technical;
  if (push.event !== "alert.escalated") return t.push_body;
  return push.group === "second" ? t.push_body_second_group : t.push_body_escalated;
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let push = {};
  try {
    push = event.data ? event.data.json() : {};
  } catch (_) {
    push = {};
  }
  // Browsers require every push to show a notification (userVisibleOnly).
  event.waitUntil(showAlarm(push));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openBoard(event.notification.data?.url ?? BOARD_URL));
});

async function openBoard(url) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if (new URL(client.url).pathname === url && "focus" in client) return client.focus();
  }
  return self.clients.openWindow(url);
}

// The push service renewed the subscription: hand the new one to the API (the session cookie
// goes with it; signed out, the board offers the button again).
self.addEventListener("pushsubscriptionchange", (event) => {
  if (!event.newSubscription) return;
  event.waitUntil(
    fetch("/api/v1/push/subscriptions", {
      method: "POST",
      headers: HEADERS,
      credentials: "same-origin",
      body: JSON.stringify(event.newSubscription.toJSON()),
    }).catch(() => {}),
  );
});
