// cli/svg.cpp — SVG charts as plain strings.
#include "svg.h"
#include <algorithm>
#include <cmath>
#include <fmt/format.h>

namespace {
const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
const double W = 720, H = 440, L = 70, R = 170, Tm = 40, Bm = 70;   // size and margins

std::string esc(const std::string& s) {
    std::string o;
    for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
    return o;
}
std::string header(const std::string& title, const std::string& ylabel) {
    return fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" "
                       "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
                       "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n"
                       "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>\n",
                       W, H, (W - R + L) / 2, esc(title), (H - Bm + Tm) / 2, (H - Bm + Tm) / 2, esc(ylabel));
}
std::string axes(double y0, double y1) {
    std::string s = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", L, Tm,
                                W - L - R, H - Tm - Bm);
    for (int i = 0; i <= 4; i++) {
        double v = y0 + (y1 - y0) * i / 4, y = H - Bm - (H - Tm - Bm) * i / 4;
        s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3g}</text>\n", L - 6, y + 4, v);
        s += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n", L, W - R, y, y);
    }
    return s;
}
std::string legend(const std::vector<Series>& series) {
    std::string s;
    for (size_t i = 0; i < series.size(); i++)
        s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
                         W - R + 12, Tm + 18 * i, kColors[i % 10], W - R + 30, Tm + 18 * i + 10, esc(series[i].name));
    return s;
}
}  // namespace

std::string line_chart_svg(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (auto& s : series)
        for (auto& [x, y] : s.points)
            if (std::isfinite(y)) { x0 = std::min(x0, x); x1 = std::max(x1, x); y0 = std::min(y0, y); y1 = std::max(y1, y); }
    if (!std::isfinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y1 = y0 + 1;
    std::string out = header(title, ylabel) + axes(y0, y1) + legend(series);
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (W - R + L) / 2, H - 12, esc(xlabel));
    for (int i = 0; i <= 4; i++) {   // five ticks along x, as along y
        const double v = x0 + (x1 - x0) * i / 4, x = L + (W - L - R) * i / 4;
        out += fmt::format("<text class=\"xtick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.6g}</text>\n", x, H - Bm + 16, v);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#444\"/>\n", x, x, H - Bm, H - Bm + 4);
    }
    for (size_t i = 0; i < series.size(); i++) {
        std::string pts;
        for (auto& [x, y] : series[i].points)
            if (std::isfinite(y))
                pts += fmt::format("{:.1f},{:.1f} ", L + (x - x0) / (x1 - x0) * (W - L - R),
                                   H - Bm - (y - y0) / (y1 - y0) * (H - Tm - Bm));
        out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", kColors[i % 10], pts);
    }
    return out + "</svg>\n";
}

std::string bar_chart_svg(const std::string& title, const std::string& ylabel, const std::vector<std::string>& labels,
                          const std::vector<Series>& series) {
    double y1 = 0;
    for (auto& s : series) for (auto& p : s.points) if (std::isfinite(p.second)) y1 = std::max(y1, p.second);
    if (y1 <= 0) y1 = 1;
    std::string out = header(title, ylabel) + axes(0, y1) + legend(series);
    const double group = (W - L - R) / double(std::max<size_t>(1, labels.size()));
    const double bar = group * 0.8 / double(std::max<size_t>(1, series.size()));
    for (size_t g = 0; g < labels.size(); g++) {
        const double x = L + group * (g + 0.5), y = H - Bm + 12;   // slanted, so long labels do not overlap
        out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\" transform=\"rotate(-30 {} {})\">{}</text>\n",
                           x, y, x, y, esc(labels[g]));
        for (size_t i = 0; i < series.size(); i++) {
            double v = g < series[i].points.size() ? series[i].points[g].second : 0;
            if (!std::isfinite(v)) v = 0;
            double h = v / y1 * (H - Tm - Bm);
            out += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n",
                               L + group * g + group * 0.1 + bar * i, H - Bm - h, bar, h, kColors[i % 10]);
        }
    }
    return out + "</svg>\n";
}
