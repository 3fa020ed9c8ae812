// MovR's only script (no inline JavaScript: the Content-Security-Policy allows scripts from this server only).
document.addEventListener("DOMContentLoaded", () => {
  // The "browsing from" selector submits itself when a city is picked.
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
  // Destructive buttons ask first.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
});
