// Signing out (issue 12): this browser's push subscription goes with the session, so a shared
// phone handed to the next shift stops getting the person's alarms. Every page's sign-out form
// (form.logout, loaded by base.html) first deletes the subscription at the API, while the
// session still holds, and unsubscribes it at the push service, then signs out. Neither may
// keep anyone from signing out: the form is sent after at most SIGN_OUT_WAIT_MS, whatever
// happened (a push service that still has the subscription answers the notifier 410 once the
// browser has dropped it, or the row is deleted here: either ends the pushes).
"use strict";

(() => {
  const SUBSCRIPTIONS_URL = "/api/v1/push/subscriptions";
  const HEADERS = { "Content-Type": "application/json", "X-Requested-With": "carewatch" };
  const SIGN_OUT_WAIT_MS = 3000;

  async function dropPushSubscription() {
    if (!("serviceWorker" in navigator)) return;
    const registration = await navigator.serviceWorker.getRegistration("/");
    const subscription = await registration?.pushManager?.getSubscription();
    if (!subscription) return;
    try {
      // 204: it was the user's; 404: someone else's or none. The browser drops it either way:
      // whoever signs in next subscribes anew (the board does not reuse another's).
      await fetch(SUBSCRIPTIONS_URL, {
        method: "DELETE",
        headers: HEADERS,
        credentials: "same-origin",
        body: JSON.stringify({ endpoint: subscription.endpoint }),
      });
    } finally {
      await subscription.unsubscribe();
    }
  }

  function signOut(event) {
    const form = event.currentTarget;
    if (form.dataset.leaving) return; // pressed again while waiting: let it go at once
    event.preventDefault();
    form.dataset.leaving = "true";
    const waited = new Promise((resolve) => window.setTimeout(resolve, SIGN_OUT_WAIT_MS));
    const dropped = dropPushSubscription().catch((error) =>
      console.warn("push subscription not removed at sign-out", error),
    );
    Promise.race([dropped, waited]).then(() => form.submit());
  }

  for (const form of document.querySelectorAll("form.logout")) {
    form.addEventListener("submit", signOut);
  }
})();
