// The studies table: filters, pages of 100 rows, drill-down. Every value is set as text
// (textContent), never parsed as HTML. A link such as report.html#status=missing&q=ACC123
// opens the report filtered; open=<study UID> opens that study's details.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var C = {};
  data.columns.forEach(function (name, i) { C[name] = i; });
  var rows = data.rows, pageSize = data.page_size;
  var haystack = rows.map(function (r) {
    return [r[C.study_uid], r[C.accession], r[C.patient_id], r[C.patient_name]].join("\n").toLowerCase();
  });
  var $ = function (id) { return document.getElementById(id); };
  var controls = { status: $("f-status"), reason: $("f-reason"), route: $("f-route"), modality: $("f-modality"), q: $("f-text") };
  var tbody = document.querySelector("#studies tbody");
  var state = { page: 1, open: "" }, matches = [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent, child) { parent.appendChild(child); return child; }
  function fmt(n) { return n === null || n === undefined ? "\u2013" : Number(n).toLocaleString("en"); }
  function reasonText(code) { return code ? (data.reasons[code] || code.replace(/_/g, " ")) : ""; }

  function filter() {
    var f = {};
    Object.keys(controls).forEach(function (k) { f[k] = controls[k].value; });
    var q = f.q.trim().toLowerCase(), mod = f.modality ? " " + f.modality + " " : "";
    matches = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (f.status && r[C.status] !== f.status) continue;
      if (f.reason && r[C.reason] !== f.reason) continue;
      if (f.route && r[C.route] !== f.route) continue;
      if (mod && (" " + r[C.modalities] + " ").indexOf(mod) < 0) continue;
      if (q && haystack[i].indexOf(q) < 0) continue;
      matches.push(i);
    }
  }

  function pages() { return Math.max(1, Math.ceil(matches.length / pageSize)); }

  function draw() {
    state.page = Math.min(Math.max(1, state.page), pages());
    tbody.textContent = "";
    var start = (state.page - 1) * pageSize, end = Math.min(matches.length, start + pageSize);
    for (var k = start; k < end; k++) {
      var r = rows[matches[k]], tr = add(tbody, el("tr", "study"));
      tr.dataset.status = r[C.status];
      tr.dataset.uid = r[C.study_uid];
      add(add(tr, el("td")), el("span", "badge s-" + r[C.status], data.labels[r[C.status]] || r[C.status]));
      var who = add(tr, el("td", null, r[C.patient_name]));
      add(who, el("div", "muted mono", r[C.patient_id]));
      add(tr, el("td", null, r[C.study_date]));
      add(tr, el("td", null, r[C.accession]));
      add(tr, el("td", null, r[C.modalities]));
      add(tr, el("td", null, r[C.description]));
      add(tr, el("td", null, r[C.route]));
      add(tr, el("td", "num", fmt(r[C.expected_instances])));
      add(tr, el("td", "num", fmt(r[C.found_instances])));
      add(tr, el("td", null, reasonText(r[C.reason]) || reasonText(r[C.plan_reason])));
      tr.addEventListener("click", toggle);
      if (state.open && state.open === r[C.study_uid]) openDetails(tr, r);
    }
    $("f-count").textContent = fmt(matches.length) + " shown of " + fmt(rows.length);
    $("p-info").textContent = "page " + fmt(state.page) + " of " + fmt(pages());
    $("p-first").disabled = $("p-prev").disabled = state.page <= 1;
    $("p-next").disabled = $("p-last").disabled = state.page >= pages();
    writeHash();
  }

  function toggle(ev) {
    var tr = ev.currentTarget, next = tr.nextElementSibling;
    if (next && next.classList.contains("drill")) {
      next.remove();
      tr.classList.remove("open");
      if (state.open === tr.dataset.uid) state.open = "";
    } else {
      var uid = tr.dataset.uid, row = null;
      for (var k = 0; k < matches.length && !row; k++) if (rows[matches[k]][C.study_uid] === uid) row = rows[matches[k]];
      state.open = uid;
      openDetails(tr, row);
    }
    writeHash();
  }

  function table(parent, heads, body, cls) {
    var t = add(parent, el("table", "diff" + (cls ? " " + cls : ""))), h = add(t, el("tr"));
    heads.forEach(function (x) { add(h, el("th", null, x)); });
    body.forEach(function (cells) {
      var tr = add(t, el("tr"));
      cells.forEach(function (c) {
        var td = add(tr, el("td", c && c.cls, c && typeof c === "object" ? c.text : c));
        if (c && c.cls === undefined && typeof c === "number") td.className = "num";
      });
    });
    return t;
  }
  function list(parent, items, cls) {
    var ul = add(parent, el("ul", "mono scroll " + (cls || "")));
    items.forEach(function (x) { add(ul, el("li", null, x)); });
  }
  function more(parent, shown, total, what) {
    if (total > shown) add(parent, el("p", "muted", fmt(total - shown) + " more " + what + " are in the journal and the JSON export."));
  }

  function openDetails(tr, r) {
    var d = r[C.details] || {}, drill = el("tr", "drill"), td = add(drill, el("td"));
    td.colSpan = 10;
    tr.classList.add("open");
    tr.after(drill);
    var box = add(td, el("div", "drill"));
    add(box, el("h4", null, "Study"));
    var kv = add(box, el("dl", "kv"));
    function pair(k, v) { if (v !== undefined && v !== null && v !== "") { add(kv, el("dt", null, k)); add(kv, el("dd", null, v)); } }
    pair("Study Instance UID", r[C.study_uid]);
    pair("outcome", (data.labels[r[C.status]] || r[C.status]) + (r[C.reason] ? ": " + reasonText(r[C.reason]) + " (" + r[C.reason] + ")" : ""));
    pair("plan", r[C.action] + ": " + reasonText(r[C.plan_reason]) + " (" + r[C.plan_reason] + ")");
    pair("plan detail", d.plan_detail);
    pair("route", r[C.route]);
    pair("transcode", d.transcode);
    pair("priority", d.priority);
    if (d.match) pair("order", [d.match[0], d.match[1], d.match[2], d.match[3]].filter(Boolean).join(" \u00b7 "));
    if (d.journal) pair("apply", [d.journal[0], d.journal[1], d.journal[2], d.journal[3]].filter(Boolean).join(" \u00b7 "));
    pair("instances", "expected " + fmt(r[C.expected_instances]) + ", found " + fmt(r[C.found_instances]) +
      ", sent " + fmt(d.sent || 0) + ", already there " + fmt(d.present || 0) + ", failed " + fmt(d.failed || 0) +
      (d.extra ? ", extra at destination " + fmt(d.extra) : ""));
    if (d.verified) pair("verification", d.verified[0] + " at " + d.verified[1] + (d.verified[2] ? " (run " + d.verified[2] + ")" : "") + (d.verified[3] ? "; " + d.verified[3] : ""));
    if (d.levels) pair("levels checked", d.levels.join(", "));

    add(box, el("h4", null, "Series"));
    table(box, ["number", "Series Instance UID", "modality", "description", "expected", "found", "missing"],
      (d.series || []).map(function (s) {
        return [s[0], { text: s[1], cls: "mono" }, s[2], s[3], { text: fmt(s[4]), cls: "num" }, { text: fmt(s[5]), cls: "num" }, { text: s[6] ? fmt(s[6]) : "", cls: "num del" }];
      }));
    (d.series || []).forEach(function (s) {
      if (!s[6]) return;
      add(box, el("div", null, "Missing at the destination from series " + (s[0] || s[1]) + ":"));
      list(box, s[7], "del");
      more(box, s[7].length, s[6], "missing instances");
    });
    if (d.attrs) {
      add(box, el("h4", null, "Attributes at the destination differ from the plan"));
      table(box, ["attribute", "planned (before)", "found (after)"], d.attrs.map(function (a) {
        return [a[0], { text: a[1], cls: "add" }, { text: a[2], cls: "del" }];
      }), "attr-diff");
    }
    if (d.corr) {
      add(box, el("h4", null, "Planned corrections"));
      table(box, ["attribute", "before", "after"], d.corr.map(function (a) {
        return [a[0], { text: a[1], cls: "del" }, { text: a[2], cls: "add" }];
      }));
    }
    if (d.inst_missing || d.inst_extra) {
      add(box, el("h4", null, "Instance-level comparison"));
      if (d.inst_missing) { add(box, el("div", null, "Missing at the destination:")); list(box, d.inst_missing, "del"); }
      if (d.inst_extra) { add(box, el("div", null, "At the destination, not in the plan:")); list(box, d.inst_extra); }
    }
    if (d.images) {
      var im = d.images;
      add(box, el("h4", null, "Image comparison"));
      add(box, el("div", null, fmt(im.sampled) + " instances compared with the source copy, " + fmt(im.equal) + " equal, " +
        fmt(im.different_total) + " different, " + fmt(im.errors_total) + " could not be compared."));
      im.different.forEach(function (x) {
        add(box, el("div", "mono", x.sop_uid));
        table(box, ["tag", "element", "source", "destination"], x.differences.map(function (e) {
          return [{ text: e.tag, cls: "mono" }, e.keyword, { text: e.expected, cls: "add" }, { text: e.found, cls: "del" }];
        }), "image-diff");
        more(box, x.differences.length, x.differences_total, "differences");
      });
      if (im.errors.length) table(box, ["SOP Instance UID", "why it could not be compared"], im.errors.map(function (e) {
        return [{ text: e.sop_uid, cls: "mono" }, e.reason];
      }));
    }
    if (d.commit) {
      var cm = d.commit;
      add(box, el("h4", null, "Storage commitment"));
      add(box, el("div", cm.failed_total || cm.timed_out ? "del" : null, fmt(cm.requested) + " requested, " + fmt(cm.committed) + " committed" +
        (cm.failed_total ? ", " + fmt(cm.failed_total) + " failed" : "") + (cm.timed_out ? "; the destination did not answer in time" : "")));
      if (cm.failed.length) table(box, ["SOP Instance UID", "failure reason"], cm.failed.map(function (e) {
        return [{ text: e.sop_uid, cls: "mono" }, e.reason];
      }));
    }
    if (d.fail) {
      add(box, el("h4", null, "Failed instances"));
      table(box, ["SOP Instance UID", "reason", "status", "detail"], d.fail.map(function (f) {
        return [{ text: f[0], cls: "mono" }, f[1], { text: f[2], cls: "mono" }, f[3]];
      }), "failures");
      more(box, d.fail.length, d.failed || 0, "failed instances");
    }
  }

  function writeHash() {
    var p = new URLSearchParams();
    Object.keys(controls).forEach(function (k) { if (controls[k].value) p.set(k, controls[k].value); });
    if (state.page > 1) p.set("page", String(state.page));
    if (state.open) p.set("open", state.open);
    var hash = p.toString();
    if (hash !== location.hash.slice(1)) {
      try { history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search); } catch (e) { /* a sandboxed frame */ }
    }
  }

  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    Object.keys(controls).forEach(function (k) {
      var v = p.get(k) || "", c = controls[k];
      if (c.tagName === "SELECT" && v && !Array.prototype.some.call(c.options, function (o) { return o.value === v; })) {
        add(c, el("option", null, v)).value = v;  // a deep link to a value this report has none of
      }
      c.value = v;
    });
    state.page = parseInt(p.get("page") || "1", 10) || 1;
    state.open = p.get("open") || "";
    filter();
    if (state.open && !p.get("page")) {
      var at = -1;
      for (var k = 0; k < matches.length; k++) if (rows[matches[k]][C.study_uid] === state.open) { at = k; break; }
      if (at >= 0) state.page = Math.floor(at / pageSize) + 1;
    }
    draw();
  }

  var timer = 0;
  // Any change reads every control, so it also does the work of a search still waiting.
  function changed() { clearTimeout(timer); state.page = 1; state.open = ""; filter(); draw(); }
  ["status", "reason", "route", "modality"].forEach(function (k) { controls[k].addEventListener("change", changed); });
  controls.q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(changed, 120); });
  $("p-first").addEventListener("click", function () { state.page = 1; draw(); });
  $("p-prev").addEventListener("click", function () { state.page -= 1; draw(); });
  $("p-next").addEventListener("click", function () { state.page += 1; draw(); });
  $("p-last").addEventListener("click", function () { state.page = pages(); draw(); });
  window.addEventListener("hashchange", readHash);
  $("filters").hidden = false;
  $("pager").hidden = false;
  readHash();
})();
