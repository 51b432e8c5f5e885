// The Bitrix24 UI kit (@bitrix24/b24style, its Tailwind plugin) supplies the design tokens; tokens.css reads
// them with theme() into CSS custom properties that app.css uses. No utility classes are generated (the
// templates use the app's own rc-* classes), and no preflight: the built file is tokens and base rules only.
const b24style = require("@bitrix24/b24style");

module.exports = {
  content: [{ raw: "" }],
  corePlugins: { preflight: false },
  plugins: [(b24style.default || b24style)()],
};
