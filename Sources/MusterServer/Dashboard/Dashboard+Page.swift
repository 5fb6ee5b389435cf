extension Dashboard {
    /// The page skeleton; `dashboard.js` fills every section from the live link.
    static let page = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Muster</title>
        <link rel="icon" href="data:,">
        <link rel="stylesheet" href="/dashboard.css">
        <script src="/dashboard.js" defer></script>
        </head>
        <body data-link="connecting">
        <header class="top">
          <div class="brand"><span class="logo" aria-hidden="true"></span>Muster</div>
          <div class="meta" id="coordinator">coordinator</div>
          <div class="pill" id="link-pill" data-tone="warn">connecting</div>
          <div class="pill" id="ready-pill" data-tone="muted">readiness unknown</div>
          <div class="spacer"></div>
          <dl class="counters" id="counters">
            <div><dt>Backends ready</dt><dd id="count-ready">–</dd></div>
            <div><dt>Running</dt><dd id="count-running">–</dd></div>
            <div><dt>Queued</dt><dd id="count-queued">–</dd></div>
            <div><dt>Gated</dt><dd id="count-gated">–</dd></div>
            <div class="good"><dt>Completed</dt><dd id="count-completed">0</dd></div>
            <div><dt>Failed</dt><dd id="count-failed">0</dd></div>
            <div><dt>Canceled</dt><dd id="count-canceled">0</dd></div>
          </dl>
        </header>

        <main>
          <section class="card" id="backends">
            <div class="card-head">
              <h2>Backends</h2>
              <form class="inline" id="load-form" autocomplete="off">
                <label>Load model
                  <select id="load-model" required><option value="">model…</option></select>
                </label>
                <label>on
                  <select id="load-backend"><option value="">every eligible backend</option></select>
                </label>
                <button type="submit" class="primary">Load now</button>
              </form>
            </div>
            <div class="table-wrap">
              <table>
                <thead><tr>
                  <th class="num">ID</th><th>Name</th><th>Link</th><th>Announced</th><th>Features</th><th>Models</th>
                  <th>In flight / capacity</th><th class="num">Revision</th><th>Last seen</th><th></th>
                </tr></thead>
                <tbody id="backend-rows"><tr><td colspan="10" class="empty">waiting for the first status report…</td></tr></tbody>
              </table>
            </div>
          </section>

          <div class="two">
            <section class="card" id="gate">
              <div class="card-head"><h2>Warm-up gate</h2><span class="pill" id="gate-pill" data-tone="muted">–</span></div>
              <div id="gate-body"><p class="empty">waiting for the first status report…</p></div>
            </section>
            <section class="card" id="queue">
              <div class="card-head"><h2>Queue</h2><span class="meta" id="queue-total"></span></div>
              <div id="queue-body"><p class="empty">waiting for the first status report…</p></div>
            </section>
          </div>

          <section class="card" id="timeline">
            <div class="card-head">
              <h2>Timeline</h2>
              <div class="legend">
                <span class="swatch running"></span>running <span class="swatch completed"></span>completed
                <span class="swatch failed"></span>failed <span class="swatch canceled"></span>canceled
                <span class="swatch lost"></span>requeued
              </div>
            </div>
            <div id="gantt"><p class="empty">no job has started yet</p></div>
          </section>

          <section class="card" id="jobs">
            <div class="card-head"><h2>Recent jobs</h2><span class="meta" id="jobs-total"></span></div>
            <div class="table-wrap">
              <table>
                <thead><tr>
                  <th class="num">Job</th><th class="num">Batch</th><th>Kind</th><th>Owner</th><th class="num">Prio</th>
                  <th>State</th><th>Backend</th><th class="num">Attempt</th><th class="num">Duration</th><th></th>
                </tr></thead>
                <tbody id="job-rows"><tr><td colspan="10" class="empty">no jobs yet</td></tr></tbody>
              </table>
            </div>
          </section>
        </main>

        <div id="toasts" aria-live="polite"></div>

        <div class="overlay" id="auth" hidden>
          <form class="dialog" id="token-form" autocomplete="off">
            <h2>Token required</h2>
            <p>This coordinator is configured with a client token (<code>auth.token</code>).
               Enter it to see and steer the coordinator.</p>
            <p class="error" id="token-error" hidden>The token was not accepted.</p>
            <input type="password" id="token-input" placeholder="client token" required>
            <label class="check"><input type="checkbox" id="token-remember" checked> Remember in this tab only</label>
            <button type="submit" class="primary">Connect</button>
          </form>
        </div>
        </body>
        </html>

        """#
}
