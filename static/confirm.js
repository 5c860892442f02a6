// A button with data-confirm asks before its form is sent. The server asks too (a confirmation box
// the form must carry), so this only spares a slip of the mouse; without script the box still guards.
document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});
