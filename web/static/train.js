// Train form: show the data fields of the chosen task type (for token classification, of its chosen token data:
// tokens + tags, or text + spans) and the options of the chosen task type and family, fill the column selects from
// GET /datasets/<id>.json when the dataset changes, and show the label counts of the chosen label column.
(function () {
  "use strict";
  var script = document.currentScript;
  var form = document.getElementById("train-form");
  if (!form) return;
  var datasetUrl = script.dataset.datasetUrl;
  var family = form.querySelector("#family");
  var taskType = form.querySelector("#task_type");
  var taskTypes = JSON.parse(script.dataset.taskTypes || "{}");
  var names = JSON.parse(script.dataset.columnNames || "{}");  // the column names guessed from (web/pages/train.py)
  var tokenData = form.querySelector("#token_data");
  var spansColumn = form.querySelector("#spans_column");
  var metric = form.querySelector("#metric");
  var tokensColumn = form.querySelector("#tokens_column");
  var tagsColumn = form.querySelector("#tags_column");
  var qaColumns = ["#question_column", "#context_column", "#answers_column"].map(function (id) {
    return form.querySelector(id);
  });
  var choicesColumn = form.querySelector("#choices_column");
  var dataset = form.querySelector("#dataset_id");
  var textColumn = form.querySelector("#text_column");
  var labelColumn = form.querySelector("#label_column");
  var labelColumns = form.querySelector("#label_columns");
  var counts = document.getElementById("label-counts");
  var stats = {};

  var multiLabel = form.querySelector("#multi_label");

  function chosenTaskType() { return taskType ? taskType.value : "text-classification"; }
  function tokens() { return chosenTaskType() === "token-classification"; }
  function spans() { return tokens() && tokenData !== null && tokenData.value === "spans"; }
  function questions() { return chosenTaskType() === "question-answering"; }
  function multipleChoice() { return chosenTaskType() === "multiple-choice"; }
  // multiple choice reads the .mc-only fields and these of other task types: the label column (the right choice's
  // position or text), the question and context columns (question answering's)
  var MC_SHARED = ["field-label_column", "field-question_column", "field-context_column"];

  // text classification shows the .text-only fields; question answering the .qa-only ones; multiple choice the
  // .mc-only ones and MC_SHARED; token classification the .token-only ones, of which those of the other token data
  // (.tokens-data or .spans-data) are hidden; the text column is text-only and spans-data
  function dataFieldShown(el) {
    if (multipleChoice()) return el.classList.contains("mc-only") || MC_SHARED.indexOf(el.id) >= 0;
    if (questions()) return el.classList.contains("qa-only");
    if (!tokens()) return el.classList.contains("text-only");
    if (el.classList.contains("spans-data")) return spans();
    if (el.classList.contains("tokens-data")) return !spans();
    return el.classList.contains("token-only");
  }

  // a task type trains some families only: the others cannot be chosen while it is
  function showTaskType() {
    var info = taskTypes[chosenTaskType()] || {};
    Array.prototype.forEach.call(family.options, function (o) {
      o.disabled = Boolean(info.families) && info.families.indexOf(o.value) < 0;
    });
    if (family.selectedOptions[0] && family.selectedOptions[0].disabled) family.value = info.families[0];
    // the metric select's choices are every task type's: keep one the chosen task type reports
    if (metric && info.metrics && info.metrics.indexOf(metric.value) < 0) metric.value = info.default_metric;
    showFamilyOptions();
  }

  // the options of other task types and families are hidden (each declares them in data-task-types and
  // data-families); several label columns are chosen for multitask (one task each) and may be for multi-label (one
  // 0/1 column per label); token classification reads a tokens and a tags column instead of texts and labels
  function showFamilyOptions() {
    var chosen = family.value;
    var kind = chosenTaskType();
    var token = tokens();
    var qa = questions();
    var multitask = chosen === "multitask";
    var multi = !multitask && multiLabel && multiLabel.checked;
    form.querySelectorAll("[data-families]").forEach(function (el) {
      if (!el.classList.contains("field")) return;
      var types = el.dataset.taskTypes;
      el.hidden = el.dataset.families.split(" ").indexOf(chosen) < 0
        || (types !== undefined && types.split(" ").indexOf(kind) < 0);
    });
    var choice = multipleChoice();
    form.querySelectorAll(".text-only, .token-only, .qa-only, .mc-only").forEach(function (el) {
      el.hidden = !dataFieldShown(el);
    });
    if (!token && !qa && !choice) {
      form.querySelectorAll(".label-columns").forEach(function (el) { el.hidden = !(multitask || multi); });
      form.querySelectorAll(".single-column").forEach(function (el) { el.hidden = multitask; });
    }
    showCounts();
  }

  function fill(select, columns, emptyLabel) {
    var previous = Array.prototype.filter.call(select.options, function (o) { return o.selected; })
      .map(function (o) { return o.value; });
    select.replaceChildren();
    columns.forEach(function (column) {
      var option = document.createElement("option");
      option.value = column;
      option.textContent = column || emptyLabel || (select.id.indexOf("pair") >= 0 ? "none" : "default");
      option.selected = option.defaultSelected = previous.indexOf(column) >= 0;
      select.appendChild(option);
    });
  }

  // keep a valid selection; else pick a column by name, else the first column accepted by `fallback`
  function guess(select, columns, names, fallback) {
    if (Array.prototype.some.call(select.options, function (o) { return o.selected && o.defaultSelected; })) return;
    for (var i = 0; i < names.length; i++) {
      for (var j = 0; j < columns.length; j++) {
        if (columns[j].toLowerCase() === names[i]) { select.value = columns[j]; return; }
      }
    }
    var candidate = fallback ? columns.filter(fallback)[0] : undefined;
    if (candidate !== undefined) select.value = candidate;
  }

  function describe(column) {
    var s = stats[column];
    if (!s) return "";
    if (!s.top_values) return "“" + column + "”: " + s.distinct + " distinct values (does not look like a label column)";
    return "“" + column + "”: " + s.top_values.map(function (p) { return p[0] + " " + p[1]; }).join(" · ");
  }

  function showCounts() {
    if (!counts) return;
    if (tokens() || questions()) { counts.textContent = ""; return; }
    var chosen = family.value === "multitask"
      ? Array.prototype.filter.call(labelColumns.options, function (o) { return o.selected; }).map(function (o) { return o.value; })
      : [labelColumn.value];
    counts.textContent = chosen.map(describe).filter(Boolean).join("  |  ");
  }

  // a dataset holds span data when a column is named as span data's are and none as a tokens column (as
  // guess_token_data in web/pages/train.py)
  function guessTokenData(columns) {
    var lowered = columns.map(function (c) { return c.toLowerCase(); });
    var has = function (list) { return lowered.some(function (c) { return list.indexOf(c) >= 0; }); };
    return !has(names.tokens) && has(names.span_data);
  }

  // on the page's first load the token data is the server's guess, or the user's choice of a re-shown form
  function loadDataset(event) {
    if (!dataset || !dataset.value) return;
    fetch(datasetUrl + encodeURIComponent(dataset.value) + ".json", { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (info) {
        stats = info.column_stats || {};
        [textColumn, labelColumn, labelColumns, tokensColumn, tagsColumn, spansColumn].forEach(function (select) {
          if (select) fill(select, info.columns);
        });
        if (choicesColumn) fill(choicesColumn, [""].concat(info.columns), "the ending0, ending1, ... columns");
        var pair = form.querySelector("#text_pair_column");
        if (pair) fill(pair, [""].concat(info.columns));
        var spanData = guessTokenData(info.columns);
        if (tokenData && event && !tokenDataChosen) tokenData.value = spanData ? "spans" : "tokens";
        guess(textColumn, info.columns, spanData ? names.spans_text : names.text);
        guess(labelColumn, info.columns, names.label,
              function (c) { return c !== textColumn.value && stats[c] && stats[c].label_like; });
        if (tokensColumn) guess(tokensColumn, info.columns, names.tokens);
        if (tagsColumn) guess(tagsColumn, info.columns, names.tags,
                              function (c) { return c !== tokensColumn.value; });
        if (spansColumn) guess(spansColumn, info.columns, names.spans,
                               function (c) { return c !== textColumn.value; });
        // question answering: "" (default) leaves the column to the server's defaults (a SQuAD file has none);
        // multiple choice's context may be named as SWAG's (sent1)
        var qaNames = [["question"], names.context || ["context"], ["answers"]];
        qaColumns.forEach(function (select, i) {
          if (!select) return;
          fill(select, [""].concat(info.columns));
          guess(select, info.columns, qaNames[i]);
        });
        showFamilyOptions();
        showCounts();
      })
      .catch(function () { if (counts) counts.textContent = "Could not load the dataset's columns."; });
  }

  // the token data follows each dataset's guess until the user picks one
  var tokenDataChosen = false;
  if (tokenData) tokenData.addEventListener("change", function () { tokenDataChosen = true; showFamilyOptions(); });
  family.addEventListener("change", showFamilyOptions);
  if (taskType) taskType.addEventListener("change", showTaskType);
  if (multiLabel) multiLabel.addEventListener("change", showFamilyOptions);
  if (dataset) dataset.addEventListener("change", loadDataset);
  labelColumn.addEventListener("change", showCounts);
  labelColumns.addEventListener("change", showCounts);
  showTaskType();
  loadDataset();
})();
