/* energy-ledger report: table sorting, row filtering and the Pareto selector. No libraries. */
(function () {
  "use strict";

  function sortKey(cell) {
    if (cell && cell.hasAttribute("data-value")) {
      var text = cell.getAttribute("data-value");
      return { numeric: true, value: text === "" ? NaN : Number(text) };
    }
    return { numeric: false, value: cell ? cell.textContent.trim() : "" };
  }

  function compare(a, b) {
    if (a.numeric && b.numeric) {
      return a.value - b.value;
    }
    return String(a.value).localeCompare(String(b.value), undefined, { numeric: true });
  }

  function missing(key) {
    return key.numeric ? isNaN(key.value) : key.value === "";
  }

  /* Sort a table's body by one header's column; missing values go last either way. */
  function sortBy(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th[aria-sort]").forEach(function (other) {
      other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var keyed = Array.prototype.map.call(body.rows, function (row) {
      return { row: row, key: sortKey(row.cells[column]) };
    });
    keyed.sort(function (x, y) {
      var mx = missing(x.key), my = missing(y.key);
      if (mx || my) {
        return mx === my ? 0 : mx ? 1 : -1;
      }
      var order = compare(x.key, y.key);
      return ascending ? order : -order;
    });
    keyed.forEach(function (item) {
      body.appendChild(item.row);
    });
  }

  function setUpSorting() {
    document.querySelectorAll("table.sortable thead th").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () {
        sortBy(th);
      });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortBy(th);
        }
      });
    });
  }

  function setUpFilter() {
    var table = document.getElementById("comparison-table");
    var box = document.getElementById("filter");
    if (!table || !box) {
      return;
    }
    var hidePartial = document.getElementById("hide-partial");
    var hideWarn = document.getElementById("hide-warn");
    var count = document.getElementById("row-count");
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var texts = rows.map(function (row) {
      return Array.prototype.map
        .call(row.cells, function (cell) {
          return cell.textContent.trim();
        })
        .join(" ")
        .toLowerCase();
    });
    function apply() {
      var query = box.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (row, i) {
        var hide =
          (query !== "" && texts[i].indexOf(query) < 0) ||
          (hidePartial && hidePartial.checked && row.classList.contains("row-partial")) ||
          (hideWarn && hideWarn.checked && row.classList.contains("row-warn"));
        row.hidden = hide;
        if (!hide) {
          shown += 1;
        }
      });
      if (count) {
        count.textContent = shown + " of " + rows.length + " shown";
      }
    }
    box.addEventListener("input", apply);
    [hidePartial, hideWarn].forEach(function (input) {
      if (input) {
        input.addEventListener("change", apply);
      }
    });
    apply();
  }

  function setUpPareto() {
    var select = document.getElementById("pareto-latency");
    if (!select) {
      return;
    }
    function show() {
      Array.prototype.forEach.call(select.options, function (option) {
        var figure = document.getElementById("fig-pareto-" + option.value);
        if (figure) {
          figure.hidden = option.value !== select.value;
        }
      });
    }
    select.addEventListener("change", show);
    show();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpSorting();
    setUpFilter();
    setUpPareto();
  });
})();
