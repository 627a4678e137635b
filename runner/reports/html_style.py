"""The HTML report's stylesheet, inline in every report so that the file stands alone."""

# Verdict colours follow the Markdown report's emphasis: what needs a reader is red or blue, what is as expected is
# green or muted. Wide tables scroll inside their box instead of widening the page.
STYLE = """
body { margin: 0; background: #fafafa; color: #1b1b1b;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0; }
h2 { font-size: 19px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
nav { margin: 10px 0 4px; padding: 6px 10px; background: #f0f0f0; border-radius: 4px; }
nav a { color: #0b57d0; text-decoration: none; }
.description { color: #444; }
.env { color: #333; }
.badge { font-size: 13px; padding: 2px 8px; border-radius: 10px; vertical-align: middle; color: #fff; }
.badge.pass { background: #2e7d32; }
.badge.fail { background: #c62828; }
.scroll { overflow-x: auto; margin: 6px 0 10px; }
table { border-collapse: collapse; font-size: 12.5px; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; vertical-align: top; }
td.text { white-space: normal; min-width: 18em; max-width: 44em; }
th { background: #f3f3f3; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafafa; }
td.pass { color: #2e7d32; }
td.fail, td.regressed, td.slow { color: #c62828; background: #fdecea; }
td.error { color: #8e0000; background: #fdecea; }
td.crash { color: #fff; background: #8e0000; }
td.xfail { color: #8d6e63; }
td.xpass { color: #0b57d0; background: #e8f0fe; }
td.changed { color: #ef6c00; background: #fff3e0; }
td.fixed { color: #2e7d32; background: #e8f5e9; }
details { margin: 4px 0; }
summary { cursor: pointer; color: #0b57d0; }
details > :not(summary) { margin-left: 16px; }
pre { background: #f5f5f5; border: 1px solid #ddd; padding: 8px; overflow-x: auto; max-height: 24em; }
.warning { color: #8a5a00; }
.warning::before { content: "⚠ "; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; background: #fff; }
figcaption { color: #555; font-size: 12.5px; margin-top: 2px; }
footer { margin-top: 32px; color: #666; font-size: 12px; }
"""
