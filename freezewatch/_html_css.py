"""The HTML report's style sheet (inline in the page: it must open with no network)."""

CSS = """
:root { color-scheme: light; --ink: #1d2330; --dim: #667085; --line: #e4e7ec; --bg: #f5f6f8;
  --card: #fff; --accent: #0b5cad; --hit: #fff6e0;
  --mono: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans",
  "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 8px; }
footer { max-width: 1180px; margin: 0 auto; padding: 8px 24px 32px; color: var(--dim);
  font-size: 12px; }
header .brand { font-size: 12px; font-weight: 600; letter-spacing: .08em;
  text-transform: uppercase; color: var(--accent); }
h1 { font-size: 22px; margin: 2px 0 2px; font-weight: 650; word-break: break-all; }
h2 { font-size: 16px; margin: 0 0 4px; font-weight: 650; }
h4 { font-size: 13px; margin: 16px 0 6px; font-weight: 650; }
.period { margin: 0 0 18px; color: var(--dim); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 20px; margin: 0 0 18px; }
.hint { margin: 0 0 12px; color: var(--dim); font-size: 13px; }
.note { margin: 8px 0 0; padding: 8px 12px; background: #fff8e6; border: 1px solid #f5d78e;
  border-radius: 6px; font-size: 13px; }
.dim { color: var(--dim); }
.path { font-family: var(--mono); font-size: 12px; color: var(--dim); word-break: break-all; }
code, pre { font-family: var(--mono); font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; background: none;
  border: 0; padding: 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; }
.card .label { font-size: 12px; color: var(--dim); text-transform: uppercase;
  letter-spacing: .05em; }
.card .value { font-size: 26px; font-weight: 650; margin: 2px 0; white-space: nowrap; }
.card .sub { font-size: 12px; color: var(--dim); }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 0 0 8px; font-size: 12px; }
.key { display: inline-flex; align-items: center; gap: 6px; }
.key i { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
.key i.unf { background: repeating-linear-gradient(45deg, #667085 0 2px, #d0d5dd 2px 4px); }
svg.timeline { width: 100%; height: auto; display: block; font-family: inherit; }
svg .lane { fill: #fff; } svg .lane.odd { fill: #f7f8fa; }
svg .grid { stroke: #e4e7ec; stroke-width: 1; }
svg .tick { font-size: 11px; fill: #667085; text-anchor: middle; }
svg .lane-label { font-size: 12px; fill: #344054; }
svg .mark { stroke-width: .6; fill-opacity: .9; }
svg .mark:hover { stroke: #1d2330; stroke-width: 1.5; }
.ranking .row { display: grid; align-items: center; gap: 10px;
  grid-template-columns: 2.2rem minmax(0, 1fr) 9rem 3.6rem 5.6rem 5.6rem 6.4rem 6.4rem 7.5rem;
  padding: 8px 10px; border-bottom: 1px solid var(--line); }
.ranking .head { font-size: 11px; text-transform: uppercase; letter-spacing: .05em;
  color: var(--dim); border-bottom: 1px solid #cfd4dc; }
.ranking .row > :nth-child(7) { padding-left: 14px; }
.ranking .n { text-align: right; font-variant-numeric: tabular-nums; }
.ranking .more { color: var(--dim); font-size: 13px; }
summary.row { cursor: pointer; list-style: none; }
summary.row::-webkit-details-marker { display: none; }
summary.row:hover { background: #f4f7fb; }
details[open] > summary.row { background: #eef4fb; }
.rank { color: var(--dim); font-variant-numeric: tabular-nums; white-space: nowrap; }
.rank::before { content: "\\25B8"; display: inline-block; width: 1em; color: #98a2b3; }
details[open] .rank::before { content: "\\25BE"; }
.sig { min-width: 0; }
.sig b { font-weight: 600; }
.sig > .path, .sig .via { display: block; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.sig .via { font-size: 12px; color: var(--dim); }
.sig .code { display: block; color: #344054; white-space: pre; overflow: hidden;
  text-overflow: ellipsis; }
.pill { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px;
  white-space: nowrap; background: color-mix(in srgb, var(--c) 16%, white);
  color: color-mix(in srgb, var(--c) 70%, black); border: 1px solid
  color-mix(in srgb, var(--c) 40%, white); }
.plus { color: #b54708; font-weight: 700; margin-left: 1px; cursor: help; }
.share { display: flex; align-items: center; gap: 6px; font-size: 12px; color: var(--dim);
  font-variant-numeric: tabular-nums; }
.bar { flex: 1; height: 8px; background: #eef0f3; border-radius: 4px; overflow: hidden; }
.bar i { display: block; height: 100%; background: var(--accent); border-radius: 4px; }
.detail { padding: 6px 18px 18px 46px; border-bottom: 1px solid var(--line);
  background: #fbfcfd; }
.frames { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin-top: 10px; }
.frame { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px;
  background: #fff; min-width: 0; }
.flabel { font-size: 11px; text-transform: uppercase; letter-spacing: .05em;
  color: var(--dim); }
.fwhere { margin: 2px 0 6px; }
pre.src { margin: 0; padding: 8px 10px; background: #1d2330; color: #f2f4f7;
  border-radius: 6px; white-space: pre-wrap; word-break: break-all; }
pre.src.none { background: #f2f4f7; color: var(--dim); }
dl.facts { display: grid; grid-template-columns: 7.5rem 1fr; gap: 4px 12px; margin: 14px 0 0; }
dl.facts dt { color: var(--dim); } dl.facts dd { margin: 0; word-break: break-word; }
ol.stack { margin: 0; padding: 0 0 0 2.2em; font-size: 13px; }
ol.stack li { padding: 1px 0; }
ol.stack li code, ul.tasks code, ol.chain code { display: block; color: #475467;
  white-space: pre-wrap; word-break: break-all; }
ol.stack li.lib { color: #98a2b3; } ol.stack li.lib code { color: #98a2b3; }
ol.stack li.hit { background: var(--hit); border-radius: 4px; }
ol.stack .fn { font-weight: 600; }
ul.tasks { margin: 0; padding: 0; list-style: none; font-size: 13px; }
ul.tasks li { padding: 5px 0; border-top: 1px dashed var(--line); }
ul.tasks .count { font-variant-numeric: tabular-nums; font-weight: 600; }
ul.tasks .state { font-size: 11px; padding: 0 6px; border-radius: 4px; background: #eef0f3; }
.await { padding-left: 1.4em; }
table.inflight { border-collapse: collapse; width: 100%; font-size: 13px; }
table.inflight th { text-align: left; font-weight: 600; color: var(--dim); font-size: 12px; }
table.inflight td, table.inflight th { padding: 3px 8px; border-bottom: 1px solid var(--line);
  word-break: break-all; }
table.inflight tr.hit td { background: var(--hit); }
ol.chain { margin: 0; padding-left: 1.6em; font-size: 13px; }
.deadlock { color: #b42318; font-weight: 600; margin: 0 0 6px; }
ul.skipped { margin: 0; font-size: 13px; }
.empty { color: var(--dim); }
@media (max-width: 900px) {
  .cards { grid-template-columns: repeat(2, 1fr); }
  .frames { grid-template-columns: 1fr; }
  .ranking .row { grid-template-columns: 2rem minmax(0, 1fr) 5rem 5.6rem; }
  .ranking .row > :nth-child(3), .ranking .row > :nth-child(6),
  .ranking .row > :nth-child(7), .ranking .row > :nth-child(8),
  .ranking .row > :nth-child(9) { display: none; }
}
@media print { section { break-inside: avoid; } }
"""
