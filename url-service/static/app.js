// portail's only script: copy-to-clipboard on buttons with data-copy="#input-id".
// The pages work without it (the link is selectable text).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const input = document.querySelector(button.dataset.copy);
  if (!input) return;
  input.select();
  navigator.clipboard.writeText(input.value).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select and copy"; }
  );
});
