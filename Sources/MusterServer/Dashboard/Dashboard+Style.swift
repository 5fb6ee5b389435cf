extension Dashboard {
    /// Light theme, system fonts only.
    static let style = #"""
        :root {
          --bg: #f4f5f7; --card: #ffffff; --line: #e2e5e9; --line-soft: #eef0f2;
          --text: #1d2329; --muted: #68717b; --faint: #9aa2ab;
          --accent: #2457c5; --accent-soft: #e8eefb;
          --good: #1d7a3a; --good-soft: #e3f3e7; --warn: #8a5a00; --warn-soft: #fbf0d9;
          --bad: #c0262d; --bad-soft: #fbe4e5; --video: #6f42c1; --video-soft: #efe8fb;
          --run: #2f6fe0; --done: #3a9a5b; --fail: #d9434a; --cancel: #a3abb4;
          --mono: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace;
        }
        * { box-sizing: border-box; }
        html, body { margin: 0; background: var(--bg); color: var(--text); }
        body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
        h2 { font-size: 13px; font-weight: 650; margin: 0; letter-spacing: .02em; text-transform: uppercase; color: #3a434c; }
        code, .mono { font-family: var(--mono); font-size: 12px; }

        .top { display: flex; align-items: center; gap: 12px; padding: 10px 20px; background: #1d2329; color: #f1f3f5; flex-wrap: wrap; }
        .brand { font-size: 17px; font-weight: 700; display: flex; align-items: center; gap: 8px; letter-spacing: .01em; }
        .logo { width: 18px; height: 18px; border-radius: 5px; background: linear-gradient(135deg, #5b8def 0 50%, #8d6be8 50% 100%); }
        .top .meta { color: #aab3bc; }
        .spacer { flex: 1; }
        .counters { display: flex; gap: 6px; margin: 0; flex-wrap: wrap; }
        .counters > div { background: #2a323a; border-radius: 6px; padding: 3px 10px; min-width: 74px; }
        .counters dt { font-size: 10px; text-transform: uppercase; letter-spacing: .05em; color: #9aa4ae; }
        .counters dd { margin: 0; font-size: 17px; font-weight: 650; font-variant-numeric: tabular-nums; }
        .counters .good dd { color: #7fd69b; }
        .counters .bad dd { color: #ff9a9e; }

        .pill { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: 12px; font-weight: 600; white-space: nowrap; }
        .pill[data-tone="good"] { background: var(--good-soft); color: var(--good); }
        .pill[data-tone="warn"] { background: var(--warn-soft); color: var(--warn); }
        .pill[data-tone="bad"] { background: var(--bad-soft); color: var(--bad); }
        .pill[data-tone="muted"] { background: var(--line-soft); color: var(--muted); }

        main { padding: 16px 20px 40px; display: grid; gap: 16px; max-width: 1600px; margin: 0 auto; }
        .two { display: grid; grid-template-columns: 3fr 2fr; gap: 16px; }
        @media (max-width: 1000px) { .two { grid-template-columns: 1fr; } }
        .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
        .card-head { display: flex; align-items: center; gap: 12px; padding: 10px 14px; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
        .card-head .meta { color: var(--muted); margin-left: auto; }
        .empty { color: var(--faint); padding: 14px; margin: 0; }
        td.empty { text-align: center; }

        .table-wrap { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; }
        th { text-align: left; font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600;
             padding: 7px 10px; background: #fafbfc; border-bottom: 1px solid var(--line); white-space: nowrap; }
        td { padding: 7px 10px; border-bottom: 1px solid var(--line-soft); vertical-align: middle; }
        tbody tr:last-child td { border-bottom: 0; }
        tbody tr:hover td { background: #fafbfd; }
        .num { text-align: right; font-variant-numeric: tabular-nums; }
        td.id { font-family: var(--mono); font-size: 12px; color: var(--muted); text-align: right; }
        .name { font-weight: 600; }
        .sub { color: var(--muted); font-size: 11px; }

        .tag { display: inline-block; font-size: 11px; border-radius: 4px; padding: 0 6px; margin: 1px 2px 1px 0; background: var(--line-soft); color: #47515b; white-space: nowrap; }
        .tag.hot { background: var(--video-soft); color: var(--video); font-weight: 650; }
        .tag.loaded { background: var(--accent-soft); color: var(--accent); font-weight: 600; }
        .tag.local { background: #e9f2ee; color: #2c6b4a; }
        .tag.remote { background: #eef0f6; color: #4a5578; }
        .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: var(--faint); vertical-align: 1px; }
        .dot.up { background: #2ea44f; } .dot.suspect { background: #d29a00; } .dot.down { background: var(--bad); }
        .state { font-weight: 600; font-size: 12px; }
        .state.ready { color: var(--good); } .state.loading, .state.starting { color: var(--warn); }
        .state.draining { color: var(--video); } .state.none { color: var(--faint); font-weight: 400; }

        .bar { position: relative; width: 140px; height: 14px; border-radius: 3px; background: var(--line-soft); overflow: hidden; display: inline-block; vertical-align: middle; }
        .bar > .bound { position: absolute; inset: 0 auto 0 0; background: #b9cdf4; }
        .bar > .running { position: absolute; inset: 0 auto 0 0; background: var(--run); }
        .bar-label { margin-left: 8px; font-variant-numeric: tabular-nums; color: var(--muted); font-size: 12px; }

        button { font: inherit; font-size: 12px; border: 1px solid #cfd4da; background: #fff; color: var(--text); border-radius: 6px; padding: 3px 10px; cursor: pointer; }
        button:hover { background: #f3f5f7; }
        button:disabled { color: var(--faint); cursor: default; background: #fafbfc; }
        button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
        button.primary:hover { background: #1d4aa8; }
        button.danger { color: var(--bad); border-color: #efc1c3; }
        button.danger.armed { background: var(--bad); color: #fff; border-color: var(--bad); }
        select, input[type="password"] { font: inherit; font-size: 12px; border: 1px solid #cfd4da; border-radius: 6px; padding: 3px 6px; background: #fff; color: var(--text); }
        form.inline { display: flex; align-items: center; gap: 8px; margin-left: auto; color: var(--muted); flex-wrap: wrap; }
        form.inline label { display: flex; align-items: center; gap: 6px; }

        .gate-open { padding: 14px; color: var(--good); font-weight: 600; }
        .gate-open .sub { font-weight: 400; }
        .wait { padding: 12px 14px; border-bottom: 1px solid var(--line-soft); display: grid; gap: 6px; }
        .wait:last-child { border-bottom: 0; }
        .wait-head { display: flex; align-items: baseline; gap: 8px; flex-wrap: wrap; }
        .wait-head .held { font-size: 15px; font-weight: 700; }
        .wait-backends { display: flex; gap: 6px; flex-wrap: wrap; }
        .who { border: 1px solid var(--line); border-radius: 6px; padding: 1px 8px; font-size: 12px; }
        .who .sub { margin-left: 4px; }
        .countdown { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 12px; }
        .countdown .track { flex: 1; height: 6px; border-radius: 3px; background: var(--line-soft); overflow: hidden; max-width: 320px; }
        .countdown .track > div { height: 100%; background: #d9a441; }

        .qtable td, .qtable th { padding: 6px 12px; }
        .qtotals { display: flex; gap: 14px; padding: 10px 14px; border-bottom: 1px solid var(--line-soft); color: var(--muted); flex-wrap: wrap; }
        .qtotals b { color: var(--text); font-variant-numeric: tabular-nums; }

        #gantt { padding: 8px 14px 14px; }
        .g-axis, .g-row { display: grid; grid-template-columns: 150px 1fr; align-items: stretch; }
        .g-axis .g-track { height: 20px; position: relative; border-bottom: 1px solid var(--line); }
        .g-tick { position: absolute; top: 2px; transform: translateX(-50%); font-size: 11px; color: var(--faint); white-space: nowrap; }
        .g-row { border-bottom: 1px solid var(--line-soft); }
        .g-row:last-child { border-bottom: 0; }
        .g-label { padding: 5px 8px 5px 0; font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
        .g-label .mono { color: var(--muted); margin-right: 6px; }
        .g-track { position: relative; background-image: linear-gradient(to right, var(--line-soft) 1px, transparent 1px); }
        .g-bar { position: absolute; height: 16px; border-radius: 3px; font-size: 10px; line-height: 16px; color: #fff; padding: 0 4px; overflow: hidden; white-space: nowrap; min-width: 3px; }
        .g-bar.running { background: var(--run); background-image: repeating-linear-gradient(45deg, rgba(255,255,255,.18) 0 6px, transparent 6px 12px); }
        .g-bar.completed { background: var(--done); }
        .g-bar.failed { background: var(--fail); }
        .g-bar.canceled { background: var(--cancel); }
        .g-bar.lost { background: #e8a33d; }
        .g-now { position: absolute; top: 0; bottom: 0; width: 1px; background: var(--bad); opacity: .5; }
        .legend { display: flex; align-items: center; gap: 6px; color: var(--muted); font-size: 12px; margin-left: auto; }
        .swatch { display: inline-block; width: 12px; height: 10px; border-radius: 2px; margin-left: 8px; }
        .swatch.running { background: var(--run); } .swatch.completed { background: var(--done); } .swatch.failed { background: var(--fail); }
        .swatch.canceled { background: var(--cancel); } .swatch.lost { background: #e8a33d; }

        .jstate { font-weight: 600; font-size: 12px; }
        .jstate.completed { color: var(--good); } .jstate.failed { color: var(--bad); } .jstate.canceled { color: var(--muted); }
        .jstate.running { color: var(--run); } .jstate.bound { color: #4a6fb5; } .jstate.gated { color: var(--warn); } .jstate.queued { color: #5b6570; }
        .progress { display: inline-block; width: 48px; height: 5px; border-radius: 3px; background: var(--line-soft); vertical-align: middle; margin-left: 6px; overflow: hidden; }
        .progress > div { height: 100%; background: var(--run); }
        .err { color: var(--bad); font-size: 11px; }

        #toasts { position: fixed; right: 16px; bottom: 16px; display: grid; gap: 8px; z-index: 10; }
        .toast { background: #1d2329; color: #f1f3f5; border-radius: 6px; padding: 8px 12px; box-shadow: 0 4px 16px rgba(0,0,0,.18); max-width: 420px; }
        .toast.bad { background: var(--bad); }

        .overlay { position: fixed; inset: 0; background: rgba(29,35,41,.55); display: grid; place-items: center; z-index: 20; }
        .overlay[hidden] { display: none; }
        .dialog { background: #fff; border-radius: 10px; padding: 22px; width: 380px; display: grid; gap: 12px; box-shadow: 0 12px 40px rgba(0,0,0,.25); }
        .dialog h2 { font-size: 15px; text-transform: none; letter-spacing: 0; }
        .dialog p { margin: 0; color: var(--muted); }
        .dialog .error { color: var(--bad); }
        .dialog input[type="password"] { padding: 7px 10px; font-size: 14px; }
        .dialog .check { color: var(--muted); font-size: 12px; display: flex; gap: 6px; align-items: center; }
        .dialog button { padding: 7px; font-size: 13px; }

        """#
}
