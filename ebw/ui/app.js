// EBW administration page: plain JavaScript, no build step, nothing from another origin.
// The server answers the same HTML for every /ui/ path; this script picks the view from
// location.pathname and reads and writes everything through the JSON API (/api/).
// The bearer token lives in sessionStorage (this tab only). Patient data (the worklist
// view) is only ever held in memory: never stored, never logged, never put in a URL.
(function () {
  'use strict';

  var TOKEN_KEY = 'ebw.token';
  var FLASH_KEY = 'ebw.flash'; // a one-line notice for the next page ("Saved ...": no patient data)
  var REFRESH_MS = 5000;
  var PAGE_SIZE = 25;

  // -- small helpers ------------------------------------------------------------------

  function h(tag, props) {
    var el = document.createElement(tag);
    var key;
    props = props || {};
    for (key in props) {
      if (!Object.prototype.hasOwnProperty.call(props, key)) continue;
      var v = props[key];
      if (v === null || v === undefined || v === false) continue;
      if (key === 'class') el.className = v;
      else if (key === 'text') el.textContent = v;
      else if (key === 'value') el.value = v;
      else if (key.slice(0, 2) === 'on') el.addEventListener(key.slice(2), v);
      else el.setAttribute(key, v === true ? '' : String(v));
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, kid) {
    if (kid === null || kid === undefined || kid === false) return;
    if (Array.isArray(kid)) { kid.forEach(function (k) { append(el, k); }); return; }
    el.append(kid instanceof Node ? kid : String(kid));
  }

  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

  function main() { return document.getElementById('main'); }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function enc(s) { return encodeURIComponent(s); }

  function setTitle(text) { document.title = text + ' \u2014 EBW'; }

  function flash(text) { sessionStorage.setItem(FLASH_KEY, text); }

  function takeFlash() {
    var text = sessionStorage.getItem(FLASH_KEY);
    sessionStorage.removeItem(FLASH_KEY);
    return text;
  }

  function toLogin(reason) {
    var next = location.pathname;
    var url = '/ui/login?next=' + enc(next) + (reason ? '&reason=' + enc(reason) : '');
    location.replace(url);
  }

  // The message of an API error for one field: the rule when the API gives it, else the
  // error without its leading "field: ".
  function fieldMessage(body) {
    if (body.rule) return body.rule;
    var text = body.error || 'invalid value';
    var prefix = (body.field || '') + ': ';
    return body.field && text.indexOf(prefix) === 0 ? text.slice(prefix.length) : text;
  }

  function errorText(r) {
    var text = (r.body && r.body.error) || ('HTTP ' + r.status);
    if (r.status === 403) return 'Not allowed: ' + text + '. Your token may only read; ask an administrator.';
    return text;
  }

  // A JSON API call: resolves {status, ok, body}. A 401 (no or revoked token) goes back
  // to the sign-in page, and the promise never resolves.
  function api(method, path, body) {
    var t = token();
    if (!t) { toLogin(); return new Promise(function () {}); }
    var opts = { method: method, headers: { Authorization: 'Bearer ' + t }, cache: 'no-store' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (resp.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          toLogin('expired');
          return new Promise(function () {});
        }
        return { status: resp.status, ok: resp.ok, body: data || {} };
      });
    }, function () {
      return { status: 0, ok: false, body: { error: 'EBW did not answer (network error)' } };
    });
  }

  function notice(text, kind) {
    return h('p', { class: 'notice ' + (kind || 'info'), role: kind === 'error' ? 'alert' : 'status', text: text });
  }

  function pageHeader(title, lead, actions) {
    setTitle(title);
    return h('div', { class: 'page-head' },
      h('div', null, h('h1', { id: 'page-title', tabindex: '-1', text: title }), lead ? h('p', { class: 'lead', text: lead }) : null),
      actions ? h('div', { class: 'actions' }, actions) : null);
  }

  function field(id, label, control, hint) {
    var hintId = id + '-hint';
    var errId = id + '-error';
    control.id = id;
    control.setAttribute('aria-describedby', (hint ? hintId + ' ' : '') + errId);
    return h('div', { class: 'field', 'data-field': id },
      h('label', { for: id, text: label }),
      control,
      hint ? h('p', { class: 'hint', id: hintId, text: hint }) : null,
      h('p', { class: 'field-error', id: errId, 'aria-live': 'polite' }));
  }

  function showFieldError(form, name, text) {
    var input = form.querySelector('#' + CSS.escape(name));
    var err = form.querySelector('#' + CSS.escape(name + '-error'));
    if (!input || !err) return false;
    err.textContent = text;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return true;
  }

  function clearFieldErrors(form) {
    form.querySelectorAll('.field-error').forEach(function (e) { e.textContent = ''; });
    form.querySelectorAll('[aria-invalid]').forEach(function (e) { e.removeAttribute('aria-invalid'); });
  }

  function fmtDicomDateTime(v) {
    var m = /^(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?/.exec(v || '');
    if (!m) return v || '';
    return m[1] + '-' + m[2] + '-' + m[3] + (m[4] ? ' ' + m[4] + ':' + (m[5] || '00') : '');
  }

  function fmtPersonName(v) {
    var parts = String(v || '').split('=')[0].split('^');
    var family = parts[0] || '';
    var rest = parts.slice(1).filter(Boolean).join(' ');
    return rest ? family + ', ' + rest : family;
  }

  function fmtTime(epochSeconds) {
    if (typeof epochSeconds !== 'number') return '';
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  // -- sign in --------------------------------------------------------------------------

  function safeNext(raw) {
    return raw && raw.indexOf('/ui/') === 0 && raw.indexOf('//') < 0 && raw !== '/ui/login' ? raw : '/ui/endpoints';
  }

  function loginPage() {
    var params = new URLSearchParams(location.search);
    var next = safeNext(params.get('next'));
    var input = h('input', { type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true });
    var button = h('button', { type: 'submit', id: 'signin', class: 'primary', text: 'Sign in' });
    var form = h('form', { class: 'card login', novalidate: true },
      h('h1', { id: 'page-title', text: 'Sign in' }),
      params.get('reason') === 'expired' ? notice('Your token was not accepted (unknown or revoked): sign in again.', 'error') : null,
      params.get('reason') === 'signout' ? notice('Signed out.') : null,
      field('token', 'Access token', input,
        'The bearer token of your EBW user. The first administrator\u2019s is EBW_ADMIN_TOKEN (or the one ' +
        'printed at the first start). Kept for this browser tab only.'),
      h('div', { class: 'buttons' }, button));
    setTitle('Sign in');
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      var t = input.value.trim();
      if (!t) { showFieldError(form, 'token', 'Enter your access token.'); return; }
      button.disabled = true;
      fetch('/api/endpoints', { headers: { Authorization: 'Bearer ' + t }, cache: 'no-store' }).then(function (resp) {
        button.disabled = false;
        if (resp.status === 401) { showFieldError(form, 'token', 'Unknown or revoked token.'); return; }
        // 200, or 403 for a user without connectivity rights: signed in either way
        sessionStorage.setItem(TOKEN_KEY, t);
        location.assign(next);
      }, function () {
        button.disabled = false;
        showFieldError(form, 'token', 'EBW did not answer (network error).');
      });
    });
    main().append(form);
    input.focus();
  }

  // -- connectivity: the list of endpoints ------------------------------------------------

  function hostPort(host, port) { return (host || '') + ':' + (port === null || port === undefined ? '' : port); }

  function endpointsPage() {
    var root = main();
    root.append(pageHeader('Connectivity',
      'EBW endpoints: each takes ADT on its HL7 port and answers worklist queries (C-FIND) on its DICOM port.',
      h('a', { class: 'button primary', id: 'add-endpoint', href: '/ui/endpoints/new', text: '+ Add' })));
    var msg = takeFlash();
    if (msg) root.append(notice(msg, 'success'));
    var holder = h('div', { class: 'table-wrap' }, h('p', { class: 'muted', text: 'Loading\u2026' }));
    root.append(holder);
    Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/ehr-connections')]).then(function (rs) {
      var r = rs[0];
      clear(holder);
      if (!r.ok) { holder.append(notice(errorText(r), 'error')); return; }
      var ehrNames = {};
      if (rs[1].ok) (rs[1].body.items || []).forEach(function (c) { ehrNames[c.id] = c.name; });
      var eps = r.body.endpoints || [];
      if (!eps.length) { holder.append(h('p', { class: 'muted', text: 'No endpoints yet: add one.' })); return; }
      holder.append(h('table', { id: 'endpoints', class: 'grid' },
        h('caption', { class: 'visually-hidden', text: 'EBW endpoints' }),
        h('thead', null, h('tr', null,
          ['Name', 'HL7 (ADT in)', 'DICOM (worklist)', 'AE title', 'Procedure', 'EHR connection', 'Actions']
            .map(function (t) { return h('th', { scope: 'col', text: t }); }))),
        h('tbody', null, eps.map(function (ep) {
          var ehr = ep.ehr_connection_id ? (ehrNames[ep.ehr_connection_id] || ep.ehr_connection_id)
            : (ep.ehr && ep.ehr.host ? hostPort(ep.ehr.host, ep.ehr.port) : '\u2014');
          return h('tr', { 'data-id': ep.id },
            h('th', { scope: 'row' }, h('span', { class: 'name', text: ep.display_name }),
              h('span', { class: 'muted small', text: ep.id })),
            h('td', { class: 'mono', text: hostPort(ep.hl7_host, ep.hl7_port) }),
            h('td', { class: 'mono', text: hostPort(ep.dicom_host, ep.dicom_port) }),
            h('td', { class: 'mono', text: ep.scp_aet }),
            h('td', null, h('span', { class: 'mono', text: ep.procedure_id }), ' ',
              h('span', { class: 'muted', text: ep.procedure_description })),
            h('td', { text: ehr }),
            h('td', { class: 'row-actions' },
              h('a', { href: '/ui/endpoints/' + enc(ep.id), 'aria-label': 'Edit ' + ep.display_name, text: 'Edit' }),
              h('a', { href: '/ui/endpoints/' + enc(ep.id) + '/worklist', 'aria-label': 'View Worklist of ' + ep.display_name,
                text: 'View Worklist' })));
        }))));
    });
  }

  // -- the Add/Edit EBW form ----------------------------------------------------------------

  // [API field, label, input type, hint, extra]
  var SECTIONS = [
    ['General', [
      ['display_name', 'Display Name', 'text', 'The endpoint\u2019s name on this page and in the audit log (1-64 characters).'],
      ['procedure_id', 'Procedure ID', 'text', 'Requested Procedure ID of every item; OBR-4.1 of ORUs (up to 16 characters).'],
      ['procedure_description', 'Procedure Description', 'text', 'Requested Procedure Description of every item; OBR-4.2 of ORUs.'],
      ['modality', 'Modality', 'text', 'Modality of the scheduled procedure step, e.g. US.'],
      ['pacs_push_delay_seconds', 'PACS Push Delay (seconds)', 'number', 'Delay between the ORU to the EHR and the push of the study to PACS.'],
      ['timezone', 'Timezone', 'text', 'IANA timezone of the modalities, e.g. Europe/Paris: item dates and times are given in it.'],
      ['ehr_connection_id', 'EHR connection', 'select', 'Where ORU results are sent (EHR connections are shared by endpoints).'],
      ['pacs_destination_id', 'PACS destination', 'select', 'Where studies are pushed after the ORU.']
    ]],
    ['HL7 (ADT in)', [
      ['hl7_host', 'HL7 Host', 'text', 'Address the MLLP listener binds (0.0.0.0: every interface).'],
      ['hl7_port', 'HL7 Port', 'number', 'Port of the MLLP listener (1-65535).']
    ]],
    ['Accession numbers', [
      ['accession_prefix', 'Accession Number Prefix', 'text', '2-4 letters (A-Z).'],
      ['accession_digits', 'Number of Digits', 'number', 'Digits after the prefix: at least 12; prefix + digits at most 16.'],
      ['accession_period_minutes', 'Accession Number Generation (minutes)', 'number',
        'Minutes before an encounter gets a new accession number (1-1440).']
    ]],
    ['DICOM (worklist out)', [
      ['scp_aet', 'SCP AET', 'text', 'The called AE title modalities query (up to 16 characters).'],
      ['dicom_host', 'DICOM Host', 'text', 'Address the DICOM listener binds (0.0.0.0: every interface).'],
      ['dicom_port', 'DICOM Port', 'number', 'Port of the DICOM listener (1-65535).']
    ]]
  ];

  function formFields() {
    var out = [];
    SECTIONS.forEach(function (s) { s[1].forEach(function (f) { out.push(f); }); });
    return out;
  }

  function loadDefaults() {
    // The defaults of a new endpoint, as the OpenAPI document states them (no token needed).
    return fetch('/api/openapi.json', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (doc) {
      var props = doc.components.schemas.Endpoint.properties;
      var out = {};
      Object.keys(props).forEach(function (k) {
        var m = /default '([^']*)'\.?$/.exec(props[k].description || '');
        if (m) out[k] = m[1];
      });
      return out;
    }).catch(function () { return {}; });
  }

  function endpointFormPage(id) {
    var creating = id === null;
    var root = main();
    var title = creating ? 'Add EBW' : 'Edit EBW';
    root.append(pageHeader(title, creating
      ? 'A new endpoint: its listeners start as soon as it is saved, without a restart.'
      : 'Changes apply within a second. New ports start new workers: open HL7 connections are closed and senders reconnect.',
      creating ? null : h('a', { class: 'button', href: '/ui/endpoints/' + enc(id) + '/worklist', text: 'View Worklist' })));
    var holder = h('div', null, h('p', { class: 'muted', text: 'Loading\u2026' }));
    root.append(holder);
    Promise.all([
      creating ? Promise.resolve({ ok: true, body: {} }) : api('GET', '/api/endpoints/' + enc(id)),
      api('GET', '/api/ehr-connections'),
      api('GET', '/api/pacs-destinations'),
      creating ? loadDefaults() : Promise.resolve({})
    ]).then(function (rs) {
      clear(holder);
      if (!rs[0].ok) { holder.append(notice(errorText(rs[0]), 'error')); return; }
      renderEndpointForm(holder, id, rs[0].body, {
        ehr_connection_id: rs[1].ok ? rs[1].body.items || [] : [],
        pacs_destination_id: rs[2].ok ? rs[2].body.items || [] : []
      }, rs[3]);
    });
  }

  function timezoneList() {
    var zones = [];
    try { zones = Intl.supportedValuesOf('timeZone'); } catch (e) { zones = []; }
    if (zones.indexOf('UTC') < 0) zones.unshift('UTC');
    return h('datalist', { id: 'timezones' }, zones.map(function (z) { return h('option', { value: z }); }));
  }

  function renderEndpointForm(holder, id, loaded, choices, defaults) {
    var creating = id === null;
    var form = h('form', { id: 'endpoint-form', class: 'card', novalidate: true });
    var status = h('p', { id: 'form-status', class: 'form-status', role: 'status' });
    var formError = h('p', { id: 'form-error', class: 'notice error', role: 'alert', hidden: true });
    form.append(formError);
    SECTIONS.forEach(function (section) {
      var fs = h('fieldset', null, h('legend', { text: section[0] }));
      var grid = h('div', { class: 'field-grid' });
      section[1].forEach(function (f) {
        var name = f[0];
        var control;
        if (f[2] === 'select') {
          control = h('select', { name: name },
            h('option', { value: '', text: '(none)' }),
            choices[name].map(function (c) {
              var detail = c.host ? ' (' + hostPort(c.host, c.port) + ')' : '';
              return h('option', { value: c.id, text: c.name + detail });
            }));
          control.value = loaded[name] || '';
        } else {
          var v = loaded[name];
          control = h('input', {
            type: f[2] === 'number' ? 'number' : 'text', name: name, inputmode: f[2] === 'number' ? 'numeric' : null,
            autocomplete: 'off', spellcheck: 'false', list: name === 'timezone' ? 'timezones' : null,
            placeholder: creating && defaults[name] !== undefined ? defaults[name] : null,
            value: v === null || v === undefined ? '' : String(v)
          });
        }
        grid.append(field(name, f[1], control, f[3]));
      });
      fs.append(grid);
      form.append(fs);
    });
    form.append(timezoneList());
    var save = h('button', { type: 'submit', id: 'save', class: 'primary', text: creating ? 'Add endpoint' : 'Save' });
    var buttons = h('div', { class: 'buttons' }, save, h('a', { class: 'button', href: '/ui/endpoints', text: 'Cancel' }));
    if (!creating) {
      buttons.append(h('button', { type: 'button', id: 'delete', class: 'danger', text: 'Delete', onclick: function () {
        if (!confirm('Delete the endpoint \u201c' + loaded.display_name + '\u201d? Its listeners close.')) return;
        api('DELETE', '/api/endpoints/' + enc(id)).then(function (r) {
          if (r.ok) { flash('Deleted ' + loaded.display_name + '.'); location.assign('/ui/endpoints'); return; }
          formError.textContent = 'Not deleted: ' + errorText(r);
          formError.hidden = false;
        });
      } }));
    }
    buttons.append(status);
    form.append(buttons);

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      formError.hidden = true;
      var body = {};
      formFields().forEach(function (f) {
        var name = f[0];
        var value = form.elements[name].value.trim();
        var before = loaded[name] === null || loaded[name] === undefined ? '' : String(loaded[name]);
        if (creating ? value === '' : value === before) return;
        body[name] = f[2] === 'select' && value === '' ? null : value;
      });
      if (!Object.keys(body).length && !creating) { status.textContent = 'No changes to save.'; return; }
      save.disabled = true;
      status.textContent = creating ? 'Starting the listeners\u2026' : 'Saving\u2026';
      var req = creating ? api('POST', '/api/endpoints', body) : api('PUT', '/api/endpoints/' + enc(id), body);
      req.then(function (r) {
        save.disabled = false;
        if (r.ok) {
          if (creating) { flash('Added ' + r.body.display_name + ': its listeners are starting.'); location.assign('/ui/endpoints'); return; }
          loaded = r.body;
          status.textContent = 'Saved.';
          return;
        }
        status.textContent = '';
        var b = r.body || {};
        var inline = b.field && showFieldError(form, b.field, fieldMessage(b));
        formError.textContent = (r.status === 403 ? '' : 'Not saved: ') + errorText(r);
        formError.hidden = false;
        if (!inline) formError.focus();
      });
    });
    formError.setAttribute('tabindex', '-1');
    holder.append(form);
    form.elements.display_name.focus();
  }

  // -- View Worklist ----------------------------------------------------------------------

  function worklistPage(id) {
    var root = main();
    var state = { offset: 0, q: '', seq: 0, expanded: {}, timer: null, total: 0 };
    var head = pageHeader('Worklist', null, h('a', { class: 'button', href: '/ui/endpoints/' + enc(id), text: 'Edit endpoint' }));
    root.append(head);
    var meta = h('p', { class: 'lead', id: 'wl-meta' });
    head.firstChild.append(meta);
    var search = h('input', { type: 'search', id: 'q', name: 'q', autocomplete: 'off', spellcheck: 'false',
      placeholder: 'Name, patient ID, admission, location or accession', 'aria-controls': 'worklist' });
    var updated = h('span', { id: 'wl-updated', class: 'muted small', 'aria-live': 'off' });
    root.append(h('div', { class: 'toolbar' },
      h('div', { class: 'search' }, h('label', { for: 'q', text: 'Search' }), search), updated));
    var errorBox = h('div', { id: 'wl-error', 'aria-live': 'assertive' });
    var tbody = h('tbody');
    var empty = h('p', { id: 'wl-empty', class: 'muted', hidden: true });
    var table = h('table', { id: 'worklist', class: 'grid worklist' },
      h('caption', { class: 'visually-hidden', text: 'Active worklist items' }),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden', text: 'Accession history' })),
        ['Patient', 'Patient ID', 'Admission', 'Location', 'Department', 'Accession', 'Scheduled']
          .map(function (t) { return h('th', { scope: 'col', text: t }); }))),
      tbody);
    var prev = h('button', { type: 'button', id: 'prev', text: '\u2190 Previous' });
    var next = h('button', { type: 'button', id: 'next', text: 'Next \u2192' });
    var range = h('span', { id: 'wl-range', role: 'status' });
    root.append(errorBox, h('div', { class: 'table-wrap' }, table), empty, h('div', { class: 'pager' }, prev, range, next));

    api('GET', '/api/endpoints/' + enc(id)).then(function (r) {
      if (!r.ok) return;
      setTitle('Worklist: ' + r.body.display_name);
      head.querySelector('h1').textContent = 'Worklist: ' + r.body.display_name;
      meta.textContent = 'AE title ' + r.body.scp_aet + ' \u00b7 DICOM ' + hostPort(r.body.dicom_host, r.body.dicom_port) +
        ' \u00b7 HL7 ' + hostPort(r.body.hl7_host, r.body.hl7_port) + ' \u00b7 scheduled times in ' + r.body.timezone +
        ' \u00b7 refreshed every ' + REFRESH_MS / 1000 + ' s';
    });

    function rowKey(it) { return it.patient_id + '|' + it.admission_id + '|' + it.study_uid; }

    function render(view) {
      var focused = document.activeElement && document.activeElement.getAttribute('data-key');
      clear(tbody);
      view.items.forEach(function (it, i) {
        var key = rowKey(it);
        var open = !!state.expanded[key];
        var histId = 'hist-' + (state.offset + i);
        var history = (it.accession_history || []).slice().reverse();
        var toggle = h('button', { type: 'button', class: 'expand', 'data-key': key, 'aria-expanded': open ? 'true' : 'false',
          'aria-controls': histId, title: 'Accession history',
          'aria-label': 'Accession history of ' + it.accession + ' (' + history.length + ')' }, String(history.length));
        toggle.addEventListener('click', function () {
          state.expanded[key] = !state.expanded[key];
          var detail = document.getElementById(histId);
          detail.hidden = !state.expanded[key];
          toggle.setAttribute('aria-expanded', state.expanded[key] ? 'true' : 'false');
        });
        tbody.append(h('tr', { class: 'item' },
          h('td', null, toggle),
          h('td', { class: 'patient', text: fmtPersonName(it.patient_name) }),
          h('td', { class: 'mono', text: it.patient_id }),
          h('td', { class: 'mono', text: it.admission_id }),
          h('td', { text: it.location }),
          h('td', { text: it.department }),
          h('td', { class: 'mono accession', text: it.accession }),
          h('td', { text: fmtDicomDateTime(it.scheduled) })));
        tbody.append(h('tr', { class: 'history', id: histId, hidden: !open },
          h('td'),
          h('td', { colspan: '7' },
            h('p', { class: 'small muted', text: 'Accession numbers issued to this encounter, newest first:' }),
            h('ol', { class: 'history-list' }, history.map(function (a, j) {
              return h('li', null, h('span', { class: 'mono', text: a.accession }), ' ',
                h('span', { class: 'muted', text: 'issued ' + fmtTime(a.issued) }),
                j === 0 ? h('span', { class: 'badge', text: 'current' }) : null);
            })))));
      });
      if (focused) {
        var again = tbody.querySelector('[data-key="' + CSS.escape(focused) + '"]');
        if (again) again.focus();
      }
      var shown = view.items.length;
      empty.hidden = shown > 0;
      table.hidden = shown === 0;
      empty.textContent = state.q ? 'No active item matches \u201c' + state.q + '\u201d.' : 'No active items.';
      range.textContent = view.total ? (state.offset + 1) + '\u2013' + (state.offset + shown) + ' of ' + view.total : '0 items';
      prev.disabled = state.offset === 0;
      next.disabled = state.offset + shown >= view.total;
      updated.textContent = 'Updated ' + new Date().toLocaleTimeString();
    }

    function load() {
      var seq = ++state.seq;
      var path = '/api/endpoints/' + enc(id) + '/worklist?offset=' + state.offset + '&limit=' + PAGE_SIZE +
        (state.q ? '&q=' + enc(state.q) : '');
      return api('GET', path).then(function (r) {
        if (seq !== state.seq) return; // a newer request is on its way
        clear(errorBox);
        if (!r.ok) { errorBox.append(notice(errorText(r), 'error')); return; }
        if (r.body.total > 0 && state.offset >= r.body.total) {
          state.offset = Math.max(0, Math.floor((r.body.total - 1) / PAGE_SIZE) * PAGE_SIZE);
          load();
          return;
        }
        state.total = r.body.total;
        render(r.body);
      });
    }

    var debounce = null;
    search.addEventListener('input', function () {
      clearTimeout(debounce);
      debounce = setTimeout(function () { state.q = search.value.trim(); state.offset = 0; load(); }, 250);
    });
    prev.addEventListener('click', function () { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); });
    next.addEventListener('click', function () { state.offset += PAGE_SIZE; load(); });
    state.timer = setInterval(function () { if (!document.hidden) load(); }, REFRESH_MS);
    document.addEventListener('visibilitychange', function () { if (!document.hidden) load(); });
    load();
  }

  // -- organizations ------------------------------------------------------------------------

  function endpointSelect(id, endpoints, value, label) {
    var sel = h('select', { id: id, 'aria-label': label || null },
      h('option', { value: '', text: '(none)' }),
      endpoints.map(function (ep) { return h('option', { value: ep.id, text: ep.display_name + ' (' + ep.id + ')' }); }));
    sel.value = value || '';
    return sel;
  }

  function organizationsPage() {
    var root = main();
    root.append(pageHeader('Organizations',
      'Each organization\u2019s Primary Worklist is the EBW endpoint its modalities use.'));
    var listBox = h('div', { class: 'table-wrap' }, h('p', { class: 'muted', text: 'Loading\u2026' }));
    var addBox = h('div');
    root.append(listBox, addBox);

    Promise.all([api('GET', '/api/organizations'), api('GET', '/api/endpoints')]).then(function (rs) {
      clear(listBox);
      if (!rs[0].ok) { listBox.append(notice(errorText(rs[0]), 'error')); return; }
      var endpoints = rs[1].ok ? rs[1].body.endpoints || [] : [];
      renderOrgs(listBox, rs[0].body.items || [], endpoints);
      renderAddOrg(addBox, endpoints);
    });
  }

  function renderOrgs(box, orgs, endpoints) {
    clear(box);
    if (!orgs.length) { box.append(h('p', { class: 'muted', id: 'no-orgs', text: 'No organizations yet.' })); return; }
    orgs.sort(function (a, b) { return a.name.localeCompare(b.name); });
    box.append(h('table', { id: 'organizations', class: 'grid' },
      h('caption', { class: 'visually-hidden', text: 'Organizations' }),
      h('thead', null, h('tr', null, ['Name', 'Primary Worklist', 'Actions'].map(function (t) {
        return h('th', { scope: 'col', text: t });
      }))),
      h('tbody', null, orgs.map(function (org) {
        var name = h('input', { type: 'text', id: 'org-name-' + org.id, value: org.name, autocomplete: 'off',
          'aria-label': 'Name of ' + org.name, 'aria-describedby': 'org-msg-' + org.id });
        var sel = endpointSelect('org-primary-' + org.id, endpoints, org.primary_worklist,
          'Primary Worklist of ' + org.name);
        var msg = h('span', { class: 'row-msg', id: 'org-msg-' + org.id, role: 'status' });
        var save = h('button', { type: 'button', id: 'org-save-' + org.id, text: 'Save', onclick: function () {
          msg.className = 'row-msg';
          msg.textContent = 'Saving\u2026';
          api('PUT', '/api/organizations/' + enc(org.id), { name: name.value.trim(), primary_worklist: sel.value || null })
            .then(function (r) {
              msg.className = 'row-msg ' + (r.ok ? 'ok' : 'bad');
              msg.textContent = r.ok ? 'Saved.' : errorText(r);
            });
        } });
        return h('tr', { 'data-id': org.id },
          h('td', null, name), h('td', null, sel), h('td', { class: 'row-actions' }, save, msg));
      }))));
  }

  function renderAddOrg(box, endpoints) {
    var name = h('input', { type: 'text', name: 'name', autocomplete: 'off' });
    var sel = endpointSelect('org-primary', endpoints, '');
    sel.name = 'primary_worklist';
    var formError = h('p', { id: 'org-error', class: 'notice error', role: 'alert', hidden: true });
    var form = h('form', { id: 'org-form', class: 'card', novalidate: true },
      h('fieldset', null, h('legend', { text: 'Add an organization' }),
        formError,
        h('div', { class: 'field-grid' },
          field('org-name', 'Name', name),
          field('org-primary', 'Primary Worklist', sel)),
        h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'org-add', class: 'primary', text: '+ Add' }))));
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      formError.hidden = true;
      api('POST', '/api/organizations', { name: name.value.trim(), primary_worklist: sel.value || null }).then(function (r) {
        if (r.ok) {
          flash('Added organization ' + r.body.name + '.');
          location.reload();
          return;
        }
        var b = r.body || {};
        var map = { name: 'org-name', primary_worklist: 'org-primary' };
        if (!(b.field && showFieldError(form, map[b.field] || b.field, fieldMessage(b)))) {
          formError.textContent = errorText(r);
          formError.hidden = false;
        }
      });
    });
    box.append(form);
    var msg = takeFlash();
    if (msg) box.insertBefore(notice(msg, 'success'), form);
  }

  // -- routing ----------------------------------------------------------------------------

  var ROUTES = [
    [/^\/ui\/login\/?$/, function () { loginPage(); }],
    [/^\/ui\/endpoints\/?$/, function () { endpointsPage(); }],
    [/^\/ui\/endpoints\/new\/?$/, function () { endpointFormPage(null); }],
    [/^\/ui\/endpoints\/([^/]+)\/worklist\/?$/, function (m) { worklistPage(decodeURIComponent(m[1])); }],
    [/^\/ui\/endpoints\/([^/]+)\/?$/, function (m) { endpointFormPage(decodeURIComponent(m[1])); }],
    [/^\/ui\/organizations\/?$/, function () { organizationsPage(); }]
  ];

  function start() {
    var path = location.pathname;
    var signedIn = !!token();
    if (!/^\/ui\/login\/?$/.test(path)) {
      if (!signedIn) { toLogin(); return; }
      var nav = document.getElementById('nav');
      nav.hidden = false;
      nav.querySelectorAll('a[data-section]').forEach(function (a) {
        if (path.indexOf('/ui/' + a.getAttribute('data-section')) === 0) a.setAttribute('aria-current', 'page');
      });
    }
    document.getElementById('signout').addEventListener('click', function () {
      sessionStorage.removeItem(TOKEN_KEY);
      location.assign('/ui/login?reason=signout');
    });
    for (var i = 0; i < ROUTES.length; i++) {
      var m = ROUTES[i][0].exec(path);
      if (m) { ROUTES[i][1](m); return; }
    }
    setTitle('Not found');
    main().append(h('h1', { text: 'Page not found' }),
      h('p', null, 'No page at this address. ', h('a', { href: '/ui/endpoints', text: 'Go to Connectivity' }), '.'));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
