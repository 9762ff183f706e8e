// AGP console: the little JavaScript the pages need. No inline script anywhere (the CSP forbids
// it); every behaviour hangs off a data- attribute. Pages work without it, with less comfort.
'use strict';

// "Copy as JSON": copies the text of the element the button names.
document.querySelectorAll('[data-copy]').forEach((button) => {
  button.addEventListener('click', async () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = 'Copied';
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = 'Selected: press Ctrl+C';
    }
    setTimeout(() => { button.textContent = 'Copy as JSON'; }, 2000);
  });
});

// Forms that start a consent ("Add & authorize", "Reconnect"): the provider's consent opens in
// a new tab (opened at the click, so no popup blocker interferes), errors stay on the form.
document.querySelectorAll('form[data-consent]').forEach((form) => {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const box = form.querySelector('[data-form-error]');
    const tab = window.open('', '_blank');
    const answer = await fetch(form.action, {
      method: 'POST',
      body: new URLSearchParams(new FormData(form)),
      headers: { accept: 'application/json' },
    });
    const body = await answer.json().catch(() => ({ error: 'the server answered something unexpected' }));
    if (answer.ok && body.authorize_url) {
      if (tab) tab.location = body.authorize_url;
      else window.open(body.authorize_url, '_blank');
      window.location = body.next;
      return;
    }
    if (tab) tab.close();
    if (box) {
      box.textContent = body.error || `HTTP ${answer.status}`;
      box.hidden = false;
      box.scrollIntoView({ block: 'center' });
    }
  });
});

// "Remove": the button works only once the connector's name is typed.
document.querySelectorAll('[data-confirm-name]').forEach((input) => {
  const button = input.form.querySelector('button[type=submit]');
  const check = () => { button.disabled = input.value !== input.dataset.confirmName; };
  input.addEventListener('input', check);
  check();
});

// Parts of a page that refresh themselves: when the admin comes back to the tab (from the
// provider's consent), and every few seconds where marked.
const refresh = async (part) => {
  const answer = await fetch(window.location.href, { headers: { 'x-console-part': part.id } });
  if (answer.ok) part.innerHTML = await answer.text();
};
const parts = Array.from(document.querySelectorAll('[data-refresh]'));
if (parts.length) {
  const all = () => parts.forEach((p) => refresh(p).catch(() => {}));
  window.addEventListener('focus', all);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) all(); });
  parts.filter((p) => p.dataset.refresh === 'poll').forEach((p) => {
    setInterval(() => { if (!document.hidden) refresh(p).catch(() => {}); }, 3000);
  });
}
