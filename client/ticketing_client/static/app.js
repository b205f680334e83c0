// GitTix: progressive enhancement only. Every page works without this file.
(function () {
  "use strict";

  // Price inputs show two decimals once the seller leaves the field.
  document.querySelectorAll("input[data-money]").forEach(function (input) {
    input.addEventListener("blur", function () {
      var value = parseFloat(input.value);
      if (input.value.trim() !== "" && isFinite(value)) input.value = value.toFixed(2);
    });
  });

  // Order countdown: counts down from the server's figure, then says the order has expired.
  var countdown = document.getElementById("countdown");
  if (countdown) {
    var deadline = Date.now() + parseInt(countdown.getAttribute("data-seconds"), 10) * 1000;
    var payForm = document.getElementById("pay-form");
    var tick = function () {
      var left = Math.round((deadline - Date.now()) / 1000);
      if (left > 0) {
        countdown.textContent = "Time left to pay: " + left + " seconds";
        return;
      }
      clearInterval(timer);
      countdown.textContent = "Order Expired";
      countdown.classList.add("expired");
      if (payForm) payForm.hidden = true;
      var note = document.getElementById("expired-note");
      if (note) note.hidden = false;
    };
    var timer = setInterval(tick, 1000);
  }

  // Stripe Elements (only when the page was given a publishable key): card → PaymentMethod id.
  var form = document.getElementById("pay-form");
  if (form && form.dataset.stripeKey && window.Stripe) {
    var stripe = window.Stripe(form.dataset.stripeKey);
    var card = stripe.elements().create("card");
    card.mount("#card-element");
    var button = form.querySelector("button[type=submit]");
    var showError = function (message) {
      var box = document.getElementById("form-errors");
      box.innerHTML = "";
      var wrap = document.createElement("div");
      wrap.className = "errors";
      wrap.setAttribute("role", "alert");
      var list = document.createElement("ul");
      var item = document.createElement("li");
      item.textContent = message;
      list.appendChild(item);
      wrap.appendChild(list);
      box.appendChild(wrap);
    };
    form.addEventListener("submit", function (event) {
      if (document.getElementById("payment-token").value) return;
      event.preventDefault();
      button.disabled = true;
      stripe.createPaymentMethod({ type: "card", card: card }).then(function (result) {
        if (result.error) {
          showError(result.error.message);
          button.disabled = false;
          return;
        }
        document.getElementById("payment-token").value = result.paymentMethod.id;
        form.submit();
      });
    });
  }
})();
