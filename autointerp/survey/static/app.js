// The survey page: one feature at a time, step 1 (visualizations, Q1-Q2) then step 2 (examples, Q3-Q6).
// The server holds all state; this page only renders what /api/* returns and posts the answers.
// Sign-in: an invitation link's token (#t=...) or, with open enrollment, a typed id or Prolific's PROLIFIC_PID;
// the server answers with an HttpOnly cookie, and the token/ids are removed from the address bar at once.
"use strict";

const $ = (id) => document.getElementById(id);
let config = null;
let questions = [];
let state = null;
let busy = false;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
  if (message) box.scrollIntoView({ block: "nearest" });
}

async function api(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
  } catch (err) {
    throw new Error("Cannot reach the survey server. Your saved answers are safe; try again in a moment.");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const err = new Error((data && data.error) || `The server answered ${response.status}.`);
    err.status = response.status;
    throw err;
  }
  return data;
}

function likert(q, namePrefix) {
  const fs = document.createElement("fieldset");
  fs.id = `${namePrefix}-fieldset`;
  fs.dataset.q = q.key;
  const legend = document.createElement("legend");
  legend.textContent = `${q.key.slice(1)}. ${q.text}`;
  fs.appendChild(legend);
  const scale = document.createElement("div");
  scale.className = "scale";
  const low = document.createElement("span");
  low.className = "end";
  low.textContent = q.low;
  scale.appendChild(low);
  for (let v = 1; v <= 5; v++) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = q.key;
    input.value = String(v);
    input.id = `${q.key}-${v}`;
    label.appendChild(input);
    label.appendChild(document.createTextNode(String(v)));
    scale.appendChild(label);
  }
  const high = document.createElement("span");
  high.className = "end";
  high.textContent = q.high;
  scale.appendChild(high);
  fs.appendChild(scale);
  return fs;
}

function textQuestion(q) {
  const div = document.createElement("div");
  div.className = "text-q";
  const label = document.createElement("label");
  label.htmlFor = q.key;
  label.textContent = `${q.key.slice(1)}. ${q.text}`;
  const input = document.createElement("input");
  input.type = "text";
  input.id = q.key;
  input.name = q.key;
  input.maxLength = 400;
  input.autocomplete = "off";
  input.placeholder = "phrase, phrase, ... (or leave empty)";
  div.appendChild(label);
  div.appendChild(input);
  return div;
}

function buildForms() {
  const s1 = $("step1-questions");
  const s2 = $("step2-questions");
  for (const q of questions) {
    const el = q.kind === "likert" ? likert(q, q.key) : textQuestion(q);
    if (q.key === "q3") $("q3-slot").appendChild(el);
    else if (q.step === 1) s1.appendChild(el);
    else s2.appendChild(el);
  }
}

function splitPhrases(text) {
  return text.split(",").map((p) => p.trim()).filter((p) => p.length > 0);
}

function radioValue(name) {
  const checked = document.querySelector(`input[name="${name}"]:checked`);
  return checked ? Number(checked.value) : null;
}

function setRadio(name, value) {
  for (const input of document.querySelectorAll(`input[name="${name}"]`)) {
    input.checked = value !== null && Number(input.value) === value;
  }
}

function setDisabled(form, disabled) {
  for (const el of form.querySelectorAll("input, button")) el.disabled = disabled;
  form.classList.toggle("answered", disabled);
}

function images(container, urls, alt) {
  container.replaceChildren();
  urls.forEach((url, i) => {
    const img = document.createElement("img");
    img.src = url;
    img.alt = `${alt} ${i + 1}`;
    img.decoding = "async";
    container.appendChild(img);
  });
}

function showSection(name) {
  for (const id of ["login", "consent", "survey", "done"]) $(id).hidden = id !== name;
}

function showLogin() {
  state = null;
  $("progress").hidden = true;
  showSection("login");
  $("login-form").hidden = !(config && config.open_enrollment && !config.prolific);
  $("need-link").hidden = !$("login-form").hidden;
  $("start").disabled = false;
}

function render(newState) {
  const previous = state && state.current ? `${state.current.item}/${state.current.step}` : null;
  state = newState;
  $("progress").hidden = false;
  $("progress-bar").max = state.total;
  $("progress-bar").value = state.done;
  $("progress-text").textContent = `${state.done} of ${state.total} features done`;
  $("who").textContent = state.participant;
  if (state.consent_required) {
    $("progress").hidden = true;
    $("consent-text").textContent = config.consent || "";
    showSection("consent");
    return;
  }
  if (state.finished) {
    showSection("done");
    $("completion").hidden = !state.completion_code;
    $("completion-code").textContent = state.completion_code || "";
    $("redirect").hidden = !state.redirect;
    if (state.redirect) $("redirect-link").href = state.redirect;
    return;
  }
  showSection("survey");
  const cur = state.current;
  const key = `${cur.item}/${cur.step}`;
  $("feature-title").textContent = `Feature ${cur.number} of ${state.total}`;
  const newFeature = !previous || previous.split("/")[0] !== cur.item;
  if (newFeature) {
    images($("vis"), cur.vis, "Feature visualization");
    $("step1").reset();
    $("step2").reset();
  }
  const form1 = $("step1");
  if (cur.step === 1) {
    form1.hidden = false;
    $("step1-summary").hidden = true;
    setDisabled(form1, false);
    $("reveal").hidden = true;
    $("examples").replaceChildren();
  } else {
    setRadio("q1", cur.q1);
    $("q2").value = cur.q2;
    setDisabled(form1, true);
    // Step 1 is locked: a one-line summary keeps the visualizations next to the examples.
    form1.hidden = true;
    $("step1-summary").textContent =
      `Your answers: question 1 = ${cur.q1}; question 2 = ${cur.phrases.length ? cur.phrases.join(", ") : "(no phrases)"}`;
    $("step1-summary").hidden = false;
    if (key !== previous) {
      images($("examples"), cur.examples, "Dataset example");
      const list = $("phrases");
      list.replaceChildren();
      for (const p of cur.phrases) {
        const li = document.createElement("li");
        li.textContent = p;
        list.appendChild(li);
      }
      $("step2").reset();
      setDisabled($("step2"), false);
      const none = cur.phrases.length === 0;
      $("no-phrases").hidden = !none;
      list.hidden = none;
      if (none) {
        setRadio("q3", 1);
        for (const input of document.querySelectorAll('input[name="q3"]')) input.disabled = true;
      }
    }
    $("reveal").hidden = false;
    if (!newFeature && key !== previous) $("feature-title").scrollIntoView({ block: "start" });
  }
  if (newFeature) window.scrollTo(0, 0);
}

async function withBusy(button, work) {
  if (busy) return;
  busy = true;
  button.disabled = true;
  showError("");
  try {
    await work();  // on success, render() decides which controls are enabled
  } catch (err) {
    showError(err.message);
    button.disabled = false;
    if (err.status === 401) {
      showLogin();
      showError(err.message);
    } else if (err.status === 409 && state) {
      // the server's state moved on (another tab, a replay): show where the participant really is
      try { render(await api("GET", "/api/state")); } catch (e) { /* keep */ }
    }
  } finally {
    busy = false;
  }
}

async function start(body) {
  const s = await api("POST", "/api/start", body);
  state = null;
  render(s);
}

function missing(keys) {
  const gaps = keys.filter((k) => radioValue(k) === null);
  return gaps.length ? `Please answer question ${gaps.map((k) => k.slice(1)).join(", ")}.` : "";
}

function init() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const participant = $("participant").value.trim();
    if (!participant) {
      showError("Please enter your participant id.");
      return;
    }
    withBusy($("start"), () => start({ participant }));
  });

  $("switch").addEventListener("click", async (ev) => {
    ev.preventDefault();
    try { await api("POST", "/api/logout", {}); } catch (err) { /* signed out locally anyway */ }
    $("participant").value = "";
    showError("");
    showLogin();
  });

  $("agree").addEventListener("click", () => {
    withBusy($("agree"), async () => { state = null; render(await api("POST", "/api/consent", {})); });
  });

  $("decline").addEventListener("click", () => {
    $("agree").disabled = true;
    $("decline").disabled = true;
    $("declined").hidden = false;
  });

  $("step1").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const gap = missing(["q1"]);
    if (gap) return showError(gap);
    const q2 = $("q2").value.trim();
    if (splitPhrases(q2).length > 4) return showError("Question 2: list at most 4 phrases, separated by commas.");
    withBusy($("submit1"), async () => {
      render(await api("POST", "/api/step1", {
        item: state.current.item, q1: radioValue("q1"), q2,
      }));
    });
  });

  $("step2").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const gap = missing(["q3", "q4", "q5", "q6"]);
    if (gap) return showError(gap);
    withBusy($("submit2"), async () => {
      render(await api("POST", "/api/step2", {
        item: state.current.item,
        q3: radioValue("q3"), q4: radioValue("q4"), q5: radioValue("q5"), q6: radioValue("q6"),
      }));
    });
  });
}

async function signIn() {
  // read the link's parameters, then take them out of the address bar (and so out of history and bookmarks)
  // invitation links carry the token after "#" (never sent to the server, so never in its access log)
  const params = new URLSearchParams(window.location.search);
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const token = fragment.get("t") || params.get("t");
  const pid = params.get("PROLIFIC_PID");
  if (window.location.search || window.location.hash) window.history.replaceState(null, "", window.location.pathname);
  try {
    if (token) return await start({ token });
    if (pid && config.prolific) {
      const body = { participant: pid };
      if (params.get("STUDY_ID")) body.study_id = params.get("STUDY_ID");
      if (params.get("SESSION_ID")) body.session_id = params.get("SESSION_ID");
      return await start(body);
    }
    render(await api("GET", "/api/state"));  // a returning participant (cookie)
  } catch (err) {
    showLogin();
    if (token || pid || err.status !== 401) showError(err.message);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    config = await api("GET", "/api/config");
    questions = config.questions;
    buildForms();
    init();
  } catch (err) {
    showError(err.message);
    return;
  }
  await signIn();
  // a link pasted into a tab that already shows the survey changes only the fragment: sign in with it too
  window.addEventListener("hashchange", () => { if (window.location.hash.includes("t=")) signIn(); });
});
