// Classify form: when a dataset is chosen, show its column selects and fill them from
// GET /datasets/<id>.json (as the train form does); with no dataset, hide them (the typed texts are used).
// The text column's first choice, "as the model was trained" (value ""), is the default and survives a change
// of dataset; a chosen column survives too when the new dataset has it.
(function () {
  "use strict";
  var script = document.currentScript;
  var form = document.getElementById("classify-form");
  if (!form) return;
  var datasetUrl = script.dataset.datasetUrl;
  var dataset = form.querySelector("#dataset_id");
  var textColumn = form.querySelector("#text_column");
  var idColumn = form.querySelector("#id_column");
  var noId = idColumn && idColumn.options.length ? idColumn.options[0].textContent : "— none —";
  var asTrained = textColumn && textColumn.options.length ? textColumn.options[0].textContent
    : "— as the model was trained —";

  function option(value, label, selected) {
    var o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    o.selected = o.defaultSelected = selected;
    return o;
  }

  // refill a select, keeping the chosen column when the new dataset has it too (else the first option)
  function fill(select, columns, none) {
    var previous = select.value;
    select.replaceChildren();
    if (none) select.appendChild(option("", none, false));
    columns.forEach(function (c) { select.appendChild(option(c, c, c === previous)); });
    if (columns.indexOf(previous) < 0 && select.options.length) select.options[0].selected = true;
  }

  function showColumns(visible) {
    form.querySelectorAll(".dataset-only").forEach(function (el) { el.hidden = !visible; });
  }

  function loadDataset() {
    if (!dataset.value) { showColumns(false); return; }
    showColumns(true);
    fetch(datasetUrl + encodeURIComponent(dataset.value) + ".json", { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (info) {
        fill(textColumn, info.columns, asTrained);
        fill(idColumn, info.columns, noId);
      })
      .catch(function () { fill(textColumn, [], asTrained); });
  }

  // the second-texts box only for models trained on sentence pairs
  var model = form.querySelector("#model_id");
  var pairModels = JSON.parse(script.dataset.pairModels || "[]").map(String);
  var pairBox = form.querySelector("#text_pairs");
  // question-answering models: the texts are questions, the second texts their contexts (line by line)
  var qaModels = JSON.parse(script.dataset.qaModels || "[]").map(String);
  var textsBox = form.querySelector("#texts");
  var placeholders = [textsBox ? textsBox.placeholder : "", pairBox ? pairBox.placeholder : ""];
  function showPairs() {
    var qa = model && qaModels.indexOf(model.value) >= 0;
    var pairs = qa || (model && pairModels.indexOf(model.value) >= 0);
    form.querySelectorAll(".pair-only").forEach(function (el) {
      el.hidden = !pairs && !(pairBox && pairBox.value.trim());  // never hide what the user typed
    });
    if (textsBox) textsBox.placeholder = qa ? "One question per line" : placeholders[0];
    if (pairBox) pairBox.placeholder = qa ? "The context of each question, one per line" : placeholders[1];
  }
  if (model) { model.addEventListener("change", showPairs); showPairs(); }

  // the aggregation strategy and the pre-tokenized mode only for token-classification models; pre-tokenized
  // lines are tagged word by word (the API's "tokens"), so no aggregation strategy applies to them
  var tokenModels = JSON.parse(script.dataset.tokenModels || "[]").map(String);
  var pretokenized = form.querySelector("#pretokenized");
  var texts = form.querySelector("#texts");
  var textsPlaceholder = texts ? texts.placeholder : "";
  function showTokenFields() {
    var token = model && tokenModels.indexOf(model.value) >= 0;
    form.querySelectorAll(".token-only").forEach(function (el) { el.hidden = !token; });
    if (!pretokenized) return;
    if (!token) pretokenized.checked = false;  // a text model takes no tokens (the server would refuse them)
    var strategy = form.querySelector("#field-aggregation_strategy");
    if (strategy && token) strategy.hidden = pretokenized.checked;
    if (texts) {
      texts.placeholder = pretokenized.checked ? "One sentence per line, tokens separated by spaces" : textsPlaceholder;
    }
  }
  if (pretokenized) pretokenized.addEventListener("change", showTokenFields);
  if (model) { model.addEventListener("change", showTokenFields); showTokenFields(); }

  // a multiple-choice model takes a context and choices instead of texts
  var choiceModels = JSON.parse(script.dataset.choiceModels || "[]").map(String);
  function showChoiceFields() {
    var choice = model && choiceModels.indexOf(model.value) >= 0;
    form.querySelectorAll(".choice-only").forEach(function (el) { el.hidden = !choice; });
    form.querySelectorAll(".text-only").forEach(function (el) { el.hidden = choice; });
  }
  if (model) { model.addEventListener("change", showChoiceFields); showChoiceFields(); }

  if (!dataset) return;
  dataset.addEventListener("change", loadDataset);
  showColumns(Boolean(dataset.value));
})();
