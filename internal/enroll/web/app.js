// The enrollment page. The token comes from the link's fragment, which the
// browser never sends anywhere; the page sends it once, in a POST body.
// With "keys made in this browser" the private key is made here and never
// leaves this page: only the public key is sent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const MARKER = "@PRIVATE-KEY-MADE-IN-THE-PAGE@";
  let token = "";
  try {
    token = decodeURIComponent(location.hash.slice(1));
  } catch (e) {
    token = "";
  }
  // The token is kept in this page only: out of the address bar, the
  // history and any screenshot of them.
  if (location.hash) history.replaceState(null, "", location.pathname);
  let privateKey = "";

  function say(text, isError) {
    $("message").textContent = text;
    $("message").className = isError ? "error" : "";
  }

  function b64(bytes) {
    let s = "";
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s);
  }

  function b64FromURL(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return s;
  }

  // makeKeys returns a WireGuard key pair made with WebCrypto X25519. The
  // private key is clamped as `wg genkey` writes it: X25519 clamps before
  // use, so the public key is the same either way, but some apps show the
  // key as written and `wg show` shows it clamped, and they must agree.
  async function makeKeys() {
    const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
    const pub = await crypto.subtle.exportKey("raw", pair.publicKey);
    const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
    const k = Uint8Array.from(atob(b64FromURL(jwk.d)), (c) => c.charCodeAt(0));
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    return { pub: b64(pub), priv: b64(k) };
  }

  async function call(path, body) {
    const res = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    let data = {};
    try { data = await res.json(); } catch (e) { /* the message below */ }
    if (!res.ok) {
      const err = new Error(data.message || "the gateway answered " + res.status);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  // fileName is a name wg-quick and the apps accept for the tunnel.
  function fileName(device) {
    const name = device.replace(/[^a-zA-Z0-9_=+.-]/g, "").slice(0, 15) || "tunnel";
    return name + ".conf";
  }

  function drawQR(text) {
    qrcode.stringToBytes = qrcode.stringToBytesFuncs["UTF-8"];
    const qr = qrcode(0, "L");
    qr.addData(text, "Byte");
    qr.make();
    const n = qr.getModuleCount();
    const quiet = 4;
    const canvas = $("qr");
    const scale = Math.max(2, Math.floor(400 / (n + 2 * quiet)));
    canvas.width = canvas.height = (n + 2 * quiet) * scale;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#000";
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        if (qr.isDark(r, c)) ctx.fillRect((c + quiet) * scale, (r + quiet) * scale, scale, scale);
      }
    }
  }

  function show(config, device) {
    if (privateKey) config = config.replace(MARKER, privateKey);
    $("config").textContent = config;
    const link = $("download");
    link.href = URL.createObjectURL(new Blob([config], { type: "text/plain" }));
    link.download = fileName(device);
    if (privateKey) {
      drawQR(config);
    } else {
      // The phone apps import no config without its private key.
      $("qr").hidden = true;
      $("done-help").textContent = "Your device keeps its own private key: in the WireGuard app, edit the tunnel whose public key you sent and enter these settings (or paste the private key into the file in place of the placeholder, then import it).";
    }
    $("done").hidden = false;
  }

  async function poll(request, secret, device) {
    for (let i = 0; ; i++) {
      let st;
      try {
        st = await call("/enroll/api/status", { request: request, secret: secret });
      } catch (e) {
        if (e.status === 404) {
          // The request is gone (its organisation was deleted, say).
          say(e.message, true);
          return;
        }
        say("Could not ask the gateway: " + e.message + " Retrying…", true);
        await new Promise((r) => setTimeout(r, 5000));
        continue;
      }
      switch (st.state) {
        case "approved":
          say("Approved.");
          show(st.config, device);
          return;
        case "denied":
          say("Your request was denied: " + (st.reason || "no reason given") + ".", true);
          return;
        case "expired":
          say("Your request expired before anyone approved it. Ask your contact for a new link.", true);
          return;
        case "withdrawn":
          say(st.reason || "This device's access was withdrawn.", true);
          return;
      }
      say("Waiting for your contact to approve “" + device + "”. Keep this page open.");
      await new Promise((r) => setTimeout(r, i < 30 ? 2000 : 10000));
    }
  }

  async function submit(ev) {
    ev.preventDefault();
    const device = $("device").value.trim();
    const pasted = $("keys-pasted").checked;
    $("submit").disabled = true;
    try {
      let pub;
      if (pasted) {
        pub = $("pubkey").value.trim();
        privateKey = "";
      } else {
        const keys = await makeKeys();
        pub = keys.pub;
        privateKey = keys.priv;
      }
      say("Sending…");
      const acc = await call("/enroll/api/submit", { token: token, device: device, public_key: pub, key_from: pasted ? "pasted" : "browser" });
      $("form").hidden = true;
      if (acc.state === "approved") say("Approved.");
      await poll(acc.request, acc.secret, device);
    } catch (e) {
      say(e.message, true);
      $("submit").disabled = false;
    }
  }

  if (!token) {
    $("nolink").hidden = false;
    return;
  }
  if (!(window.crypto && crypto.subtle)) {
    say("This browser cannot make WireGuard keys here (WebCrypto is missing). Use a current browser, or choose to send your WireGuard app's public key.", true);
  }
  $("form").hidden = false;
  $("keys-pasted").addEventListener("change", () => { $("pubkey").hidden = false; });
  $("keys-browser").addEventListener("change", () => { $("pubkey").hidden = true; });
  $("form").addEventListener("submit", submit);
})();
