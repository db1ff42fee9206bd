// Klassenfunk account settings. No dependencies, no third-party requests.
// The session lives in an HttpOnly cookie that this script never sees; every
// API call sends the CSRF header that the server requires for cookie
// sessions (auth/cookie.go).
'use strict';

(function () {
  const TEXT = {
    en: {
      'doc.title': 'Klassenfunk – Account settings',
      'skip': 'Skip to content',
      'title': 'Account settings',
      'logout': 'Log out',
      'lang.switch': 'Auf Deutsch umschalten',
      'login.heading': 'Log in',
      'login.name': 'Login',
      'login.password': 'Password',
      'login.submit': 'Log in',
      'login.hint': 'Your password does not leave this browser: a key derived from it is sent instead.',
      'login.deriving': 'Checking your password…',
      'login.failed': 'Wrong login or password.',
      'login.insecure': 'This page must be opened over HTTPS: the browser offers the needed cryptography only there.',
      'session.ended': 'Your session has ended. Please log in again.',
      'logged.out': 'You are logged out.',
      'whoami': 'Logged in as {name} ({login}).',
      'devices.heading': 'Devices',
      'devices.hint': 'Personal devices keep a trust token instead of your password. Revoke a device you lost or no longer use: it has to log in with your password again.',
      'devices.empty': 'No devices are signed in.',
      'devices.os': 'System',
      'devices.created': 'Signed in',
      'devices.lastUsed': 'Last used',
      'devices.push': 'Notifications',
      'devices.push.on': 'on',
      'devices.push.off': 'off',
      'devices.this': 'this device',
      'devices.revoke': 'Revoke',
      'devices.revoke.label': 'Revoke {name}',
      'devices.stopPush': 'Stop notifications',
      'devices.stopPush.label': 'Stop notifications for {name}',
      'revoke.title': 'Revoke this device?',
      'revoke.text': '“{name}” is signed out at once and needs your password to sign in again.',
      'revoke.ok': 'Revoke',
      'revoke.done': '“{name}” was revoked.',
      'push.title': 'Stop notifications?',
      'push.text': '“{name}” stays signed in but gets no more notifications until the app registers again.',
      'push.ok': 'Stop notifications',
      'push.done': '“{name}” gets no more notifications.',
      'logins.heading': 'Last logins',
      'logins.hint': 'The last 10 successful logins. Addresses are shortened. Failed attempts before a login that you did not make can mean that someone tried to guess your password.',
      'logins.at': 'Time',
      'logins.ip': 'Address',
      'logins.device': 'Device',
      'logins.failed': 'Failed attempts before',
      'logins.empty': 'No logins yet.',
      'countries.heading': 'Login countries',
      'countries.hint': 'You can allow logins and device use only from some countries, located by the network address. Make sure the country you are in is on the list.',
      'countries.legend': 'Allow logins from',
      'countries.all': 'all countries',
      'countries.only': 'only these countries',
      'countries.list': 'Country codes',
      'countries.help': 'Two-letter codes (ISO 3166), separated by commas, for example DE, AT, CH.',
      'countries.save': 'Save',
      'countries.nogeoip': 'This server has no location database, so the country restriction is not available.',
      'countries.unavailable': 'This server does not offer a country restriction.',
      'countries.invalid': 'Enter at least one two-letter country code, for example DE.',
      'countries.saved.all': 'Logins are allowed from all countries.',
      'countries.saved.only': 'Logins are allowed only from: {list}.',
      'data.heading': 'My data',
      'data.export.text': 'Download everything the server stores about you as a ZIP file of JSON documents.',
      'data.export': 'Download my data',
      'data.export.running': 'Preparing the download…',
      'data.export.done': 'The download has started.',
      'data.erase.heading': 'Erase account',
      'data.erase.text': 'Erases your account and everything stored about you, for good. Your devices are signed out. You need your password.',
      'data.erase': 'Erase my account…',
      'erase.title': 'Erase your account for good?',
      'erase.text': 'Your account, your messages and your devices are deleted. This cannot be undone. Enter your password to confirm.',
      'erase.ok': 'Erase account',
      'erase.running': 'Erasing your account…',
      'erase.wrong': 'The password is wrong. Your account was not erased.',
      'erase.done': 'Your account was erased.',
      'cancel': 'Cancel',
      'yes': 'yes',
      'never': '—',
      'err.rate_limited': 'Too many attempts. Please try again in {seconds} seconds.',
      'err.country_blocked': 'Access from your current country is blocked by your settings.',
      'err.forbidden': 'This is not allowed.',
      'err.not_found': 'Not found: maybe it was already deleted.',
      'err.invalid_request': 'The server did not accept this: {message}',
      'err.network': 'The server cannot be reached. Please check your connection.',
      'err.other': 'Something went wrong ({status}). Please try again.',
      'os.ios': 'iOS', 'os.android': 'Android', 'os.web': 'Web', 'os.macos': 'macOS', 'os.windows': 'Windows', 'os.linux': 'Linux'
    },
    de: {
      'doc.title': 'Klassenfunk – Kontoeinstellungen',
      'skip': 'Zum Inhalt springen',
      'title': 'Kontoeinstellungen',
      'logout': 'Abmelden',
      'lang.switch': 'Switch to English',
      'login.heading': 'Anmelden',
      'login.name': 'Benutzername',
      'login.password': 'Passwort',
      'login.submit': 'Anmelden',
      'login.hint': 'Ihr Passwort verlässt diesen Browser nicht: Gesendet wird ein daraus abgeleiteter Schlüssel.',
      'login.deriving': 'Passwort wird geprüft …',
      'login.failed': 'Benutzername oder Passwort ist falsch.',
      'login.insecure': 'Diese Seite muss über HTTPS geöffnet werden: Nur dort stellt der Browser die nötige Kryptografie bereit.',
      'session.ended': 'Ihre Sitzung ist abgelaufen. Bitte melden Sie sich neu an.',
      'logged.out': 'Sie sind abgemeldet.',
      'whoami': 'Angemeldet als {name} ({login}).',
      'devices.heading': 'Geräte',
      'devices.hint': 'Persönliche Geräte speichern statt Ihres Passworts ein Vertrauens-Token. Entziehen Sie einem verlorenen oder nicht mehr genutzten Gerät das Vertrauen: Es muss sich dann wieder mit Ihrem Passwort anmelden.',
      'devices.empty': 'Keine Geräte angemeldet.',
      'devices.os': 'System',
      'devices.created': 'Angemeldet seit',
      'devices.lastUsed': 'Zuletzt genutzt',
      'devices.push': 'Benachrichtigungen',
      'devices.push.on': 'an',
      'devices.push.off': 'aus',
      'devices.this': 'dieses Gerät',
      'devices.revoke': 'Entfernen',
      'devices.revoke.label': '{name} entfernen',
      'devices.stopPush': 'Benachrichtigungen aus',
      'devices.stopPush.label': 'Benachrichtigungen für {name} abschalten',
      'revoke.title': 'Dieses Gerät entfernen?',
      'revoke.text': '„{name}“ wird sofort abgemeldet und braucht Ihr Passwort, um sich wieder anzumelden.',
      'revoke.ok': 'Entfernen',
      'revoke.done': '„{name}“ wurde entfernt.',
      'push.title': 'Benachrichtigungen abschalten?',
      'push.text': '„{name}“ bleibt angemeldet, bekommt aber keine Benachrichtigungen mehr, bis sich die App wieder dafür registriert.',
      'push.ok': 'Abschalten',
      'push.done': '„{name}“ bekommt keine Benachrichtigungen mehr.',
      'logins.heading': 'Letzte Anmeldungen',
      'logins.hint': 'Die letzten 10 erfolgreichen Anmeldungen. Adressen sind gekürzt. Fehlversuche vor einer Anmeldung, die nicht von Ihnen stammt, können bedeuten, dass jemand Ihr Passwort erraten wollte.',
      'logins.at': 'Zeit',
      'logins.ip': 'Adresse',
      'logins.device': 'Gerät',
      'logins.failed': 'Fehlversuche davor',
      'logins.empty': 'Noch keine Anmeldungen.',
      'countries.heading': 'Anmeldeländer',
      'countries.hint': 'Sie können Anmeldungen und die Nutzung Ihrer Geräte auf einige Länder beschränken; das Land wird aus der Netzwerkadresse bestimmt. Achten Sie darauf, dass Ihr aktuelles Land in der Liste steht.',
      'countries.legend': 'Anmeldungen erlauben aus',
      'countries.all': 'allen Ländern',
      'countries.only': 'nur diesen Ländern',
      'countries.list': 'Ländercodes',
      'countries.help': 'Zweibuchstabige Codes (ISO 3166), durch Kommas getrennt, zum Beispiel DE, AT, CH.',
      'countries.save': 'Speichern',
      'countries.nogeoip': 'Dieser Server hat keine Standort-Datenbank, daher ist die Länderbeschränkung nicht verfügbar.',
      'countries.unavailable': 'Dieser Server bietet keine Länderbeschränkung an.',
      'countries.invalid': 'Geben Sie mindestens einen zweibuchstabigen Ländercode ein, zum Beispiel DE.',
      'countries.saved.all': 'Anmeldungen sind aus allen Ländern erlaubt.',
      'countries.saved.only': 'Anmeldungen sind nur erlaubt aus: {list}.',
      'data.heading': 'Meine Daten',
      'data.export.text': 'Laden Sie alles, was der Server über Sie speichert, als ZIP-Datei mit JSON-Dokumenten herunter.',
      'data.export': 'Meine Daten herunterladen',
      'data.export.running': 'Download wird vorbereitet …',
      'data.export.done': 'Der Download hat begonnen.',
      'data.erase.heading': 'Konto löschen',
      'data.erase.text': 'Löscht Ihr Konto und alles, was über Sie gespeichert ist, endgültig. Ihre Geräte werden abgemeldet. Sie brauchen Ihr Passwort.',
      'data.erase': 'Mein Konto löschen …',
      'erase.title': 'Konto endgültig löschen?',
      'erase.text': 'Ihr Konto, Ihre Nachrichten und Ihre Geräte werden gelöscht. Das lässt sich nicht rückgängig machen. Geben Sie zur Bestätigung Ihr Passwort ein.',
      'erase.ok': 'Konto löschen',
      'erase.running': 'Ihr Konto wird gelöscht …',
      'erase.wrong': 'Das Passwort ist falsch. Ihr Konto wurde nicht gelöscht.',
      'erase.done': 'Ihr Konto wurde gelöscht.',
      'cancel': 'Abbrechen',
      'yes': 'ja',
      'never': '—',
      'err.rate_limited': 'Zu viele Versuche. Bitte versuchen Sie es in {seconds} Sekunden erneut.',
      'err.country_blocked': 'Der Zugriff aus Ihrem aktuellen Land ist durch Ihre Einstellungen gesperrt.',
      'err.forbidden': 'Das ist nicht erlaubt.',
      'err.not_found': 'Nicht gefunden: Vielleicht wurde es schon gelöscht.',
      'err.invalid_request': 'Der Server hat das nicht angenommen: {message}',
      'err.network': 'Der Server ist nicht erreichbar. Bitte prüfen Sie Ihre Verbindung.',
      'err.other': 'Etwas ist schiefgegangen ({status}). Bitte versuchen Sie es erneut.',
      'os.ios': 'iOS', 'os.android': 'Android', 'os.web': 'Web', 'os.macos': 'macOS', 'os.windows': 'Windows', 'os.linux': 'Linux'
    }
  };

  const $ = (id) => document.getElementById(id);
  const store = {
    get(k) { try { return window.localStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { window.localStorage.setItem(k, v); } catch (e) { /* private mode: not kept */ } }
  };

  let lang = pickLang();
  let me = null;          // the user, from GET /api/v1/me
  let trusts = [];        // GET /api/v1/trust
  let logins = [];        // GET /api/v1/me/logins
  let countries = null;   // GET /api/v1/me/countries, or {unavailable: true}

  function pickLang() {
    const saved = store.get('kf.lang');
    if (saved === 'de' || saved === 'en') return saved;
    for (const l of navigator.languages || [navigator.language || '']) {
      if (/^de\b/i.test(l)) return 'de';
      if (/^en\b/i.test(l)) return 'en';
    }
    return 'en';
  }

  function t(key, vars) {
    let s = TEXT[lang][key];
    if (s === undefined) s = TEXT.en[key];
    if (s === undefined) s = key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : String(vars[k])));
    return s;
  }

  function applyLang() {
    document.documentElement.lang = lang;
    document.title = t('doc.title');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    const toggle = $('lang-toggle');
    const other = lang === 'de' ? 'en' : 'de';
    toggle.textContent = other === 'de' ? 'Deutsch' : 'English';
    toggle.lang = other;
    toggle.setAttribute('aria-label', t('lang.switch'));
    renderAll();
  }

  // ---- status line ------------------------------------------------------

  function say(msg) {
    $('error').textContent = '';
    $('status').textContent = msg || '';
  }

  function fail(msg) {
    $('status').textContent = '';
    $('error').textContent = msg;
  }

  // ---- API --------------------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message || code || String(status));
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function call(method, path, body) {
    const init = {
      method: method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Accept': 'application/json', 'X-Klassenfunk-CSRF': '1' }
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new APIError(0, 'network');
    }
    if (r.ok) return r;
    let code = '', message = '';
    try {
      const j = await r.json();
      code = (j.error && j.error.code) || '';
      message = (j.error && j.error.message) || '';
    } catch (e) { /* not JSON */ }
    throw new APIError(r.status, code, message, r.headers.get('Retry-After'));
  }

  async function getJSON(path) {
    return (await call('GET', path)).json();
  }

  function errorText(e) {
    if (!(e instanceof APIError)) return t('err.other', { status: e && e.message });
    switch (e.code) {
      case 'network': return t('err.network');
      case 'rate_limited': return t('err.rate_limited', { seconds: e.retryAfter || 60 });
      case 'country_blocked': return t('err.country_blocked');
      case 'forbidden': return t('err.forbidden');
      case 'not_found': return t('err.not_found');
      case 'invalid_request': return t('err.invalid_request', { message: e.message });
      default: return t('err.other', { status: e.status });
    }
  }

  // handle shows an error; a 401 means the session is gone: back to login.
  function handle(e) {
    if (e instanceof APIError && e.status === 401) {
      showLogin();
      fail(t('session.ended'));
      return;
    }
    fail(errorText(e));
  }

  // ---- client_hash (API.md) ---------------------------------------------

  function b64(bytes) {
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }

  async function clientHash(login, password) {
    const enc = new TextEncoder();
    const key = await crypto.subtle.importKey('raw', enc.encode(password), 'PBKDF2', false, ['deriveBits']);
    const bits = await crypto.subtle.deriveBits({
      name: 'PBKDF2',
      hash: 'SHA-256',
      salt: enc.encode('klassenfunk/v1/' + login.toLowerCase()),
      iterations: 600000
    }, key, 256);
    return b64(new Uint8Array(bits));
  }

  // ---- views ------------------------------------------------------------

  function showLogin() {
    me = null;
    trusts = []; logins = []; countries = null;
    // Nothing of the last user stays in the page, hidden or not: the
    // browser may be a shared school computer.
    $('whoami').textContent = '';
    $('device-list').replaceChildren();
    $('login-rows').replaceChildren();
    $('countries-list').value = '';
    if ($('confirm').open) $('confirm').close();
    $('confirm-text').textContent = '';
    say('');
    $('app-view').hidden = true;
    $('logout').hidden = true;
    $('login-view').hidden = false;
    $('login-submit').disabled = false;
    $('login-name').value = '';
    $('login-password').value = '';
  }

  async function showApp() {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('logout').hidden = false;
    await loadAll();
  }

  async function loadAll() {
    const [u, tr, lg, co] = await Promise.all([
      getJSON('/api/v1/me'),
      getJSON('/api/v1/trust'),
      getJSON('/api/v1/me/logins'),
      getJSON('/api/v1/me/countries').catch((e) => {
        if (e instanceof APIError && e.status === 401) throw e;
        return { unavailable: true };
      })
    ]);
    me = u; trusts = tr; logins = lg; countries = co;
    renderAll();
    document.body.classList.add('ready');
  }

  async function reloadTrusts() {
    trusts = await getJSON('/api/v1/trust');
    renderDevices();
  }

  function fmtTime(s) {
    if (!s) return t('never');
    const d = new Date(s);
    if (isNaN(d) || d.getUTCFullYear() < 2000) return t('never');
    return new Intl.DateTimeFormat(lang === 'de' ? 'de-DE' : 'en-GB', { dateStyle: 'medium', timeStyle: 'short' }).format(d);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function renderAll() {
    if (!me) return;
    $('whoami').textContent = t('whoami', { name: me.display_name, login: me.login });
    renderDevices();
    renderLogins();
    renderCountries();
  }

  function renderDevices() {
    const list = $('device-list');
    list.replaceChildren();
    $('device-empty').hidden = trusts.length > 0;
    const sorted = trusts.slice().sort((a, b) => (b.last_used_at || '').localeCompare(a.last_used_at || ''));
    for (const d of sorted) {
      const name = d.device_name || t('os.' + d.os);
      const heading = el('h3', null, name);
      if (d.current) heading.append(' ', el('span', { class: 'badge' }, t('devices.this')));
      const fact = (label, value, cls) => el('div', null, el('dt', null, label), el('dd', cls ? { class: cls } : null, value));
      const facts = el('dl', { class: 'facts' },
        fact(t('devices.os'), t('os.' + d.os)),
        fact(t('devices.created'), fmtTime(d.created_at)),
        fact(t('devices.lastUsed'), fmtTime(d.last_used_at)),
        fact(t('devices.push'), t(d.push ? 'devices.push.on' : 'devices.push.off'), 'push ' + (d.push ? 'on' : 'off'))
      );
      const revoke = el('button', { type: 'button', class: 'danger revoke', 'aria-label': t('devices.revoke.label', { name: name }) }, t('devices.revoke'));
      revoke.addEventListener('click', () => revokeTrust(d, name));
      const actions = el('div', { class: 'actions' }, revoke);
      if (d.push) {
        const stop = el('button', { type: 'button', class: 'stop-push', 'aria-label': t('devices.stopPush.label', { name: name }) }, t('devices.stopPush'));
        stop.addEventListener('click', () => stopPush(d, name));
        actions.append(stop);
      }
      list.append(el('li', { class: 'card', dataset: { trustId: d.id } }, heading, facts, actions));
    }
  }

  function renderLogins() {
    const rows = $('login-rows');
    rows.replaceChildren();
    $('logins-empty').hidden = logins.length > 0;
    $('login-table').hidden = logins.length === 0;
    for (const l of logins) {
      const failed = Number(l.failed_before || 0);
      rows.append(el('tr', failed > 0 ? { class: 'warn' } : null,
        el('td', { 'data-label': t('logins.at') }, fmtTime(l.at)),
        el('td', { 'data-label': t('logins.ip') }, l.ip || '—'),
        el('td', { 'data-label': t('logins.device') }, l.device_name || '—'),
        el('td', { 'data-label': t('logins.failed'), class: 'num' }, String(failed))
      ));
    }
  }

  function renderCountries() {
    const fs = $('countries-fieldset');
    const note = $('countries-note');
    if (!countries || countries.unavailable || !countries.geoip) {
      fs.disabled = true;
      note.hidden = false;
      note.textContent = t(countries && !countries.unavailable ? 'countries.nogeoip' : 'countries.unavailable');
    } else {
      fs.disabled = false;
      note.hidden = true;
    }
    const allowed = countries && Array.isArray(countries.allowed) ? countries.allowed : null;
    $('countries-all').checked = allowed === null;
    $('countries-only').checked = allowed !== null;
    if (document.activeElement !== $('countries-list')) $('countries-list').value = allowed ? allowed.join(', ') : '';
  }

  // ---- confirmation dialog ----------------------------------------------

  // confirmDialog shows the modal dialog and resolves to {ok, password}.
  function confirmDialog(opts) {
    const d = $('confirm');
    const form = $('confirm-form');
    const pwRow = $('confirm-password-row');
    const pw = $('confirm-password');
    $('confirm-title').textContent = opts.title;
    $('confirm-text').textContent = opts.text;
    $('confirm-ok').textContent = opts.ok;
    pwRow.hidden = !opts.password;
    pw.required = !!opts.password;
    pw.value = '';
    return new Promise((resolve) => {
      // Each opening finishes itself at once on OK or Cancel: close()
      // fires its event only in a later task, when a next opening may
      // already be showing, so that event must not decide anything.
      let done = false;
      const finish = (result) => {
        if (done) return;
        done = true;
        form.removeEventListener('submit', onSubmit);
        $('confirm-cancel').removeEventListener('click', onCancel);
        d.removeEventListener('close', onClose);
        pw.value = '';
        if (d.open) d.close();
        resolve(result);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        if (opts.password && !pw.value) { pw.focus(); return; }
        finish({ ok: true, password: pw.value });
      };
      const onCancel = () => finish({ ok: false });
      // Escape closes the dialog natively; a close event while the dialog
      // is open again belongs to an earlier opening.
      const onClose = () => { if (!d.open) finish({ ok: false }); };
      form.addEventListener('submit', onSubmit);
      $('confirm-cancel').addEventListener('click', onCancel);
      d.addEventListener('close', onClose);
      d.showModal();
      (opts.password ? pw : $('confirm-cancel')).focus();
    });
  }

  // ---- actions ----------------------------------------------------------

  async function onLogin(ev) {
    ev.preventDefault();
    const login = $('login-name').value.trim();
    const password = $('login-password').value;
    if (!login || !password) {
      (login ? $('login-password') : $('login-name')).focus();
      return;
    }
    if (!window.crypto || !crypto.subtle) { fail(t('login.insecure')); return; }
    const btn = $('login-submit');
    btn.disabled = true;
    say(t('login.deriving'));
    try {
      const hash = await clientHash(login, password);
      // No device id: the server gives each browser session a fresh one, so
      // nothing identifies this browser across logins.
      await call('POST', '/settings/login', { login: login, client_hash: hash });
      $('login-password').value = '';
      say('');
      await showApp();
      $('devices-heading').focus();
    } catch (e) {
      if (e instanceof APIError && e.status === 401) fail(t('login.failed'));
      else fail(errorText(e));
      $('login-password').select();
    } finally {
      btn.disabled = false;
    }
  }

  async function onLogout() {
    try { await call('POST', '/settings/logout'); } catch (e) { /* the cookie is gone either way */ }
    showLogin();
    say(t('logged.out'));
    $('login-name').focus();
  }

  async function revokeTrust(d, name) {
    const c = await confirmDialog({ title: t('revoke.title'), text: t('revoke.text', { name: name }), ok: t('revoke.ok') });
    if (!c.ok) return;
    try {
      await call('DELETE', '/api/v1/trust/' + encodeURIComponent(d.id));
      await reloadTrusts();
      say(t('revoke.done', { name: name }));
      $('devices-heading').focus();
    } catch (e) { handle(e); }
  }

  async function stopPush(d, name) {
    const c = await confirmDialog({ title: t('push.title'), text: t('push.text', { name: name }), ok: t('push.ok') });
    if (!c.ok) return;
    try {
      await call('DELETE', '/api/v1/trust/' + encodeURIComponent(d.id) + '/push');
      await reloadTrusts();
      say(t('push.done', { name: name }));
      const card = document.querySelector('li[data-trust-id="' + CSS.escape(d.id) + '"] .revoke');
      (card || $('devices-heading')).focus();
    } catch (e) { handle(e); }
  }

  async function onCountries(ev) {
    ev.preventDefault();
    let allowed = null;
    if ($('countries-only').checked) {
      allowed = $('countries-list').value.toUpperCase().split(/[\s,;]+/).filter(Boolean);
      if (allowed.length === 0 || allowed.some((c) => !/^[A-Z]{2}$/.test(c))) {
        fail(t('countries.invalid'));
        $('countries-list').focus();
        return;
      }
      allowed = Array.from(new Set(allowed));
    }
    try {
      await call('PUT', '/api/v1/me/countries', { allowed: allowed });
      countries = Object.assign({}, countries, { allowed: allowed });
      $('countries-list').value = allowed ? allowed.join(', ') : '';
      renderCountries();
      say(allowed ? t('countries.saved.only', { list: allowed.join(', ') }) : t('countries.saved.all'));
    } catch (e) { handle(e); }
  }

  function filename(disposition) {
    const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || '');
    const name = m ? decodeURIComponent(m[1]).replace(/[\\/]/g, '_') : '';
    return name || 'klassenfunk-export.zip';
  }

  async function onExport() {
    const btn = $('export');
    btn.disabled = true;
    say(t('data.export.running'));
    try {
      const r = await call('GET', '/api/v1/me/export');
      const blob = await r.blob();
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: filename(r.headers.get('Content-Disposition')), hidden: '' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      say(t('data.export.done'));
    } catch (e) {
      handle(e);
    } finally {
      btn.disabled = false;
    }
  }

  async function onErase() {
    const c = await confirmDialog({ title: t('erase.title'), text: t('erase.text'), ok: t('erase.ok'), password: true });
    if (!c.ok || !me) return;
    say(t('erase.running'));
    try {
      const hash = await clientHash(me.login, c.password);
      await call('POST', '/api/v1/me/erase', { client_hash: hash });
    } catch (e) {
      if (e instanceof APIError && e.status === 401) {
        // Wrong password, or the session ended meanwhile.
        try { await call('GET', '/api/v1/me'); } catch (e2) { handle(e2); return; }
        fail(t('erase.wrong'));
        $('erase').focus();
        return;
      }
      handle(e);
      return;
    }
    try { await call('POST', '/settings/logout'); } catch (e) { /* the session went with the account */ }
    showLogin();
    say(t('erase.done'));
    $('login-name').focus();
  }

  // ---- start ------------------------------------------------------------

  async function start() {
    $('lang-toggle').addEventListener('click', () => {
      lang = lang === 'de' ? 'en' : 'de';
      store.set('kf.lang', lang);
      applyLang();
    });
    $('login-form').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', onLogout);
    $('countries-form').addEventListener('submit', onCountries);
    $('countries-list').addEventListener('input', () => { $('countries-only').checked = true; });
    $('export').addEventListener('click', onExport);
    $('erase').addEventListener('click', onErase);
    applyLang();
    try {
      await getJSON('/api/v1/me');
      await showApp();
    } catch (e) {
      showLogin();
      if (!(e instanceof APIError && e.status === 401)) fail(errorText(e));
    }
    document.body.classList.add('ready');
  }

  start();
})();
