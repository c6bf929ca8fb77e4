// fieldsync's dashboard: a box that ticks or unticks every box of its list. The pages work
// without it.
document.addEventListener("change", (event) => {
  const all = event.target.closest("input[data-select-all]");
  if (!all) return;
  const group = all.getAttribute("data-select-all");
  for (const box of document.querySelectorAll(`input[data-select="${group}"]`)) {
    box.checked = all.checked;
  }
});
