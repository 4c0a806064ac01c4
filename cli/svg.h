// cli/svg.h — a tiny SVG writer for loss curves and bar charts (no plotting library).
#pragma once
#include <string>
#include <utility>
#include <vector>

struct Series {
    std::string name;
    std::vector<std::pair<double, double>> points;   // (x, y); NaN y values are skipped
};

// Lines on shared axes with a legend; axis ranges fit the data.
std::string line_chart_svg(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series);
// Grouped bars: one group per label, one bar per series value.
std::string bar_chart_svg(const std::string& title, const std::string& ylabel, const std::vector<std::string>& labels,
                          const std::vector<Series>& series);
